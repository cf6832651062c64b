-- Window functions: row_number, rank, dense_rank, lag, lead and aggregates OVER (PARTITION BY ... ORDER BY
-- ...). row_number, lag and lead order on unique keys (eventid is unique in the generated stores), so every
-- answer is determined by the query; rank and dense_rank are determined with ties.

-- name: win_top_apis_per_service
-- The three most called APIs of each service (row_number over an aggregate, ties broken by name).
SELECT eventsource, eventname, n, rn
FROM (
  SELECT eventsource, eventname, count(*) AS n,
         row_number() OVER (PARTITION BY eventsource ORDER BY count(*) DESC, eventname) AS rn
  FROM $EDS_ID
  GROUP BY eventsource, eventname
)
WHERE rn <= 3;

-- name: win_rank_dense_rank
-- Principals ranked by call volume per account, rank and dense_rank with ties.
SELECT recipientaccountid, useridentity.arn AS principal, count(*) AS n,
       rank() OVER (PARTITION BY recipientaccountid ORDER BY count(*) DESC) AS rnk,
       dense_rank() OVER (PARTITION BY recipientaccountid ORDER BY count(*) DESC) AS drnk
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL
GROUP BY recipientaccountid, useridentity.arn;

-- name: win_lag_previous_call
-- For each console login, the principal's previous API call and its time.
-- dataset: gen
SELECT eventid, who, eventname, prev_api, prev_time
FROM (
  SELECT eventid, useridentity.arn AS who, eventname,
         lag(eventname) OVER (PARTITION BY useridentity.arn ORDER BY eventtime, eventid) AS prev_api,
         lag(eventtime, 1) OVER (PARTITION BY useridentity.arn ORDER BY eventtime, eventid) AS prev_time
  FROM $EDS_ID
)
WHERE eventname = 'ConsoleLogin';

-- name: win_lead_next_call
-- What each principal did right after AssumeRole (lead), and the gap in seconds.
-- dataset: gen
SELECT eventid, next_api, date_diff('second', eventtime, next_time) AS gap_s
FROM (
  SELECT eventid, eventname, eventtime,
         lead(eventname) OVER (PARTITION BY useridentity.arn ORDER BY eventtime, eventid) AS next_api,
         lead(eventtime) OVER (PARTITION BY useridentity.arn ORDER BY eventtime, eventid) AS next_time
  FROM $EDS_ID
  WHERE useridentity.type = 'IAMUser'
)
WHERE eventname = 'AssumeRole' OR eventname = 'CreateAccessKey';

-- name: win_lag_default_and_offset
-- lag and lead with an offset and a default value.
-- dataset: gen
SELECT eventid, lag(eventname, 2, 'none') OVER (PARTITION BY awsregion ORDER BY eventtime, eventid) AS two_back,
       lead(eventname, 3, 'end') OVER (PARTITION BY awsregion ORDER BY eventtime, eventid) AS three_ahead
FROM $EDS_ID
WHERE eventsource = 'iam.amazonaws.com';

-- name: win_running_count
-- Running count of errors per principal in time order (an aggregate OVER with ORDER BY; peers share a value).
SELECT eventid, useridentity.arn AS who, eventtime,
       count(*) OVER (PARTITION BY useridentity.arn ORDER BY eventtime) AS running_errors
FROM $EDS_ID
WHERE errorcode IS NOT NULL AND eventid IS NOT NULL;

-- name: win_partition_totals
-- Each API's share of its service's calls (an aggregate OVER a partition without ORDER BY).
SELECT eventsource, eventname, n, sum(n) OVER (PARTITION BY eventsource) AS service_total,
       CAST(n AS double) / sum(n) OVER (PARTITION BY eventsource) AS share
FROM (SELECT eventsource, eventname, count(*) AS n FROM $EDS_ID GROUP BY 1, 2);

-- name: win_hourly_moving_sum
-- Hourly calls with a 3-hour moving sum (ROWS frame).
-- dataset: gen
SELECT hour, n, sum(n) OVER (ORDER BY hour ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving_3h,
       avg(n) OVER (ORDER BY hour ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS smoothed
FROM (SELECT date_trunc('hour', eventtime) AS hour, count(*) AS n FROM $EDS_ID GROUP BY 1);

-- name: win_min_max_over
-- First and last time each principal was seen, on every login row.
SELECT eventid, useridentity.arn AS who,
       min(eventtime) OVER (PARTITION BY useridentity.arn) AS first_seen,
       max(eventtime) OVER (PARTITION BY useridentity.arn) AS last_seen
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin';

-- name: win_burst_detection
-- Bursts: principals with at least 3 calls to the same API within one clock minute (count over a partition).
-- dataset: gen
SELECT DISTINCT who, eventname
FROM (
  SELECT useridentity.arn AS who, eventname,
         count(*) OVER (PARTITION BY useridentity.arn, eventname, date_trunc('minute', eventtime)) AS per_minute
  FROM $EDS_ID
  WHERE useridentity.arn IS NOT NULL
)
WHERE per_minute >= 3;

-- name: win_dense_rank_regions
-- Regions ranked by activity for each day (dense_rank over a grouped query).
SELECT day, awsregion, n, dense_rank() OVER (PARTITION BY day ORDER BY n DESC) AS place
FROM (SELECT date(eventtime) AS day, awsregion, count(*) AS n FROM $EDS_ID GROUP BY 1, 2);

-- name: win_row_number_whole_set
-- Numbering every IAM write in time order (no PARTITION BY), ordered output.
-- dataset: gen
SELECT row_number() OVER (ORDER BY eventtime, eventid) AS seq, eventtime, eventname
FROM $EDS_ID
WHERE eventsource = 'iam.amazonaws.com' AND readonly = false
ORDER BY seq;

-- name: win_rank_order_desc_nulls
-- rank over a key with NULLs (NULLs last in Trino for both directions).
SELECT errorcode, n, rank() OVER (ORDER BY errorcode DESC) AS by_code_desc, rank() OVER (ORDER BY errorcode) AS by_code
FROM (SELECT errorcode, count(*) AS n FROM $EDS_ID GROUP BY errorcode);
