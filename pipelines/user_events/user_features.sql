-- ML features per user, as of each UTC midnight at which they change: the
-- day after a day with events (that day enters the history), and 7 and 30
-- days later (it leaves the windows). A row uses only events from before its
-- as_of, so `weir features` can join it point-in-time without leakage; the
-- latest row with as_of <= t holds the values at t (to the day).
WITH active_days AS (
  SELECT DISTINCT userId, event_date FROM processed
),
as_of_days AS (
  SELECT DISTINCT userId, d FROM (
    SELECT userId, event_date + INTERVAL '1' DAY AS d FROM active_days
    UNION ALL
    SELECT userId, event_date + INTERVAL '8' DAY AS d FROM active_days
    UNION ALL
    SELECT userId, event_date + INTERVAL '31' DAY AS d FROM active_days
  ) AS boundaries
)
SELECT
  a.userId,
  CAST(a.d AS TIMESTAMP) AS as_of,
  COUNT(CASE WHEN p.event_date >= a.d - INTERVAL '7' DAY THEN 1 END) AS events_7d,
  COUNT(*) FILTER (WHERE p.event_date >= a.d - INTERVAL '30' DAY) AS events_30d,
  COUNT(DISTINCT CASE WHEN p.event_date >= a.d - INTERVAL '7' DAY THEN p.sessionId END) AS sessions_7d,
  COUNT(DISTINCT CASE WHEN p.event_date >= a.d - INTERVAL '30' DAY THEN p.sessionId END) AS sessions_30d,
  COUNT(CASE WHEN p.eventName = 'purchase' AND p.event_date >= a.d - INTERVAL '30' DAY THEN 1 END) AS purchases_30d,
  MAX(p.eventTimestamp) AS last_active_at,
  COALESCE(SUM(CASE WHEN p.currency = 'EUR' THEN p.amount END), 0) AS total_spend_eur,
  COALESCE(SUM(CASE WHEN p.currency = 'USD' THEN p.amount END), 0) AS total_spend_usd,
  COALESCE(SUM(CASE WHEN p.currency = 'GBP' THEN p.amount END), 0) AS total_spend_gbp
FROM as_of_days AS a
JOIN processed AS p ON p.userId = a.userId AND p.event_date < a.d
GROUP BY a.userId, a.d
