-- ML features per user, as of each UTC midnight at which they change: the
-- day after a day with events (that day enters the history), and 7 and 30
-- days later (it leaves the windows). A row uses only events from before its
-- as_of, so `weir features` can join it point-in-time without leakage; the
-- latest row with as_of <= t holds the values at t (to the day).
--
-- Cost: each as_of row joins a few rows per day of the user's history, not
-- one per event. Events are summed per user, day and session; distinct
-- sessions in a window are then counted without a set of session ids: a
-- session counts once, on its last day before the as_of (`next_date`, the
-- next day the same session has events, is null or not before the as_of).
-- Session-days are then summed per user, day and next_date, which keeps
-- exactly what the windows need.
WITH session_days AS (
  SELECT
    userId,
    event_date,
    sessionId,
    COUNT(*) AS events,
    COUNT(CASE WHEN eventName = 'purchase' THEN 1 END) AS purchases,
    SUM(CASE WHEN currency = 'EUR' THEN amount END) AS spend_eur,
    SUM(CASE WHEN currency = 'USD' THEN amount END) AS spend_usd,
    SUM(CASE WHEN currency = 'GBP' THEN amount END) AS spend_gbp,
    MAX(eventTimestamp) AS last_at
  FROM processed
  GROUP BY userId, event_date, sessionId
),
history AS (
  SELECT
    *,
    LEAD(event_date) OVER (PARTITION BY userId, sessionId ORDER BY event_date) AS next_date
  FROM session_days
),
days AS (
  SELECT
    userId,
    event_date,
    next_date,
    SUM(events) AS events,
    COUNT(sessionId) AS sessions,
    SUM(purchases) AS purchases,
    SUM(spend_eur) AS spend_eur,
    SUM(spend_usd) AS spend_usd,
    SUM(spend_gbp) AS spend_gbp,
    MAX(last_at) AS last_at
  FROM history
  GROUP BY userId, event_date, next_date
),
-- From the source, not from `days`: a CTE is computed once per use.
active_days AS (
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
  COALESCE(SUM(CASE WHEN h.event_date >= a.d - INTERVAL '7' DAY THEN h.events END), 0) AS events_7d,
  COALESCE(SUM(CASE WHEN h.event_date >= a.d - INTERVAL '30' DAY THEN h.events END), 0) AS events_30d,
  COALESCE(SUM(CASE WHEN h.event_date >= a.d - INTERVAL '7' DAY
                     AND (h.next_date IS NULL OR h.next_date >= a.d) THEN h.sessions END), 0) AS sessions_7d,
  COALESCE(SUM(CASE WHEN h.event_date >= a.d - INTERVAL '30' DAY
                     AND (h.next_date IS NULL OR h.next_date >= a.d) THEN h.sessions END), 0) AS sessions_30d,
  COALESCE(SUM(CASE WHEN h.event_date >= a.d - INTERVAL '30' DAY THEN h.purchases END), 0) AS purchases_30d,
  MAX(h.last_at) AS last_active_at,
  CAST(COALESCE(SUM(h.spend_eur), 0) AS DECIMAL(28, 2)) AS total_spend_eur,
  CAST(COALESCE(SUM(h.spend_usd), 0) AS DECIMAL(28, 2)) AS total_spend_usd,
  CAST(COALESCE(SUM(h.spend_gbp), 0) AS DECIMAL(28, 2)) AS total_spend_gbp
FROM as_of_days AS a
JOIN days AS h ON h.userId = a.userId AND h.event_date < a.d
GROUP BY a.userId, a.d
