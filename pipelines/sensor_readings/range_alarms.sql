-- Range alarms of the pump sensors: one row per device, reading and
-- measurement time whose value reached a limit, at the most severe level it
-- reached (a High-High value raises HH, not also H: the lower alarm is
-- suppressed by design, which keeps alarm floods down).
--
-- A high limit is reached when value >= limit, a low one when value <= limit.
-- Limits are per family of reading (the name before `_`: TEMP_07 is TEMP);
-- NULL means the family has no such limit. Readings of a family not listed
-- here (UPTIME_S, FAULT_CODE) raise no alarms.
--
-- The guaranteed readings are columns (TEMP_01, PRESSURE_01); the others
-- are keys of the `_rescued` JSON object. json_object_keys lists a
-- message's keys, json_get_float reads one as a number: a JSON number, or a
-- string holding one ("97.5"); null, "ERR" and anything else read as NULL
-- and raise no alarm.
WITH limits (family, low_low, low, high, high_high) AS (
  VALUES
    ('TEMP',      -10.0,  5.0,   85.0,   95.0),   -- degrees Celsius
    ('PRESSURE',    0.5,  1.0,    8.0,    9.5),   -- bar
    ('VIB',        NULL, NULL,    7.1,   11.0),   -- mm/s RMS
    ('FLOW',        5.0, 10.0,  120.0,  140.0),   -- m3/h
    ('LEVEL',       5.0, 10.0,   90.0,   95.0),   -- percent of span
    ('CURRENT',    NULL, NULL,   45.0,   55.0),   -- A
    ('RPM',        NULL, NULL, 1600.0, 1800.0),   -- 1/min
    ('HUMIDITY',   NULL, NULL,   80.0,   90.0)    -- percent RH in the enclosure
),
variable AS (
  SELECT deviceId, siteId, ts, event_date, _rescued, unnest(json_object_keys(_rescued)) AS reading
  FROM processed
  WHERE _rescued IS NOT NULL
),
readings AS (
  SELECT deviceId, siteId, ts, event_date, 'TEMP_01' AS reading, TEMP_01 AS value FROM processed
  UNION ALL
  SELECT deviceId, siteId, ts, event_date, 'PRESSURE_01' AS reading, PRESSURE_01 AS value FROM processed
  UNION ALL
  SELECT deviceId, siteId, ts, event_date, reading, json_get_float(_rescued, reading) AS value FROM variable
),
levels AS (
  SELECT
    r.deviceId, r.siteId, r.ts, r.event_date, r.reading, r.value,
    l.low_low, l.low, l.high, l.high_high,
    CASE
      WHEN r.value >= l.high_high THEN 'HH'
      WHEN r.value >= l.high THEN 'H'
      WHEN r.value <= l.low_low THEN 'LL'
      WHEN r.value <= l.low THEN 'L'
    END AS level
  FROM readings AS r
  JOIN limits AS l ON split_part(r.reading, '_', 1) = l.family
)
SELECT
  deviceId,
  siteId,
  event_date AS date,
  ts,
  reading,
  level,
  value,
  CASE level WHEN 'HH' THEN high_high WHEN 'H' THEN high WHEN 'LL' THEN low_low ELSE low END AS limit_value
FROM levels
WHERE level IS NOT NULL
