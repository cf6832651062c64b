-- Joins: inner, left, right and full outer, self-joins, and joins across stores (gen with gen2, which share
-- accounts and principals and overlap on 2024-03-03; ext with gen, which share nothing).

-- name: join_self_assume_then_use
-- Keys issued by AssumeRole and then used: join the issuing event to calls made with the key.
SELECT a.eventid AS issue_event, json_extract_scalar(a.responseelements['credentials'], '$.accessKeyId') AS key_id,
       count(u.eventid) AS uses
FROM $EDS_ID a
JOIN $EDS_ID u ON u.useridentity.accesskeyid = json_extract_scalar(a.responseelements['credentials'], '$.accessKeyId')
WHERE a.eventname = 'AssumeRole'
GROUP BY 1, 2;

-- name: join_left_errors_per_api
-- Every API with its error count, zero when it never failed (LEFT JOIN onto an aggregate).
SELECT apis.eventname, coalesce(errs.n, 0) AS errors
FROM (SELECT DISTINCT eventname FROM $EDS_ID WHERE eventsource = 's3.amazonaws.com') apis
LEFT JOIN (SELECT eventname, count(*) AS n FROM $EDS_ID WHERE errorcode IS NOT NULL GROUP BY eventname) errs
  ON errs.eventname = apis.eventname;

-- name: join_right_outer
-- RIGHT JOIN: regions of write calls with the read count, including regions without reads.
SELECT w.awsregion AS write_region, r.awsregion AS read_region, r.n AS writes, w.n AS reads
FROM (SELECT awsregion, count(*) AS n FROM $EDS_ID WHERE readonly = true AND eventsource = 'iam.amazonaws.com' GROUP BY 1) w
RIGHT JOIN (SELECT awsregion, count(*) AS n FROM $EDS_ID WHERE readonly = false GROUP BY 1) r
  ON r.awsregion = w.awsregion;

-- name: join_full_outer
-- FULL JOIN of two event kinds per principal: who only logs in, who only calls IAM, who does both.
SELECT coalesce(l.who, i.who) AS who, l.logins, i.iam_calls
FROM (SELECT useridentity.arn AS who, count(*) AS logins FROM $EDS_ID WHERE eventname = 'ConsoleLogin' GROUP BY 1) l
FULL OUTER JOIN (SELECT useridentity.arn AS who, count(*) AS iam_calls FROM $EDS_ID
                 WHERE eventsource = 'iam.amazonaws.com' GROUP BY 1) i
  ON l.who = i.who;

-- name: join_across_stores_principals
-- Principals active in both stores (gen and gen2), with their call counts in each.
-- dataset: gen
SELECT a.arn, a.n AS calls_gen, b.n AS calls_gen2
FROM (SELECT useridentity.arn AS arn, count(*) AS n FROM gen WHERE useridentity.arn IS NOT NULL GROUP BY 1) a
JOIN (SELECT useridentity.arn AS arn, count(*) AS n FROM gen2 WHERE useridentity.arn IS NOT NULL GROUP BY 1) b
  ON a.arn = b.arn;

-- name: join_across_stores_same_events
-- Events present in both stores (the overlapping day): same id, same name and time.
-- dataset: gen
SELECT g.eventname, count(*) AS n, count_if(g.eventtime = h.eventtime) AS same_time
FROM gen g JOIN gen2 h ON g.eventid = h.eventid
GROUP BY g.eventname;

-- name: join_across_stores_full
-- Per day, events in gen and in gen2 (FULL JOIN across stores on a computed key).
-- dataset: gen
SELECT coalesce(a.day, b.day) AS day, a.n AS in_gen, b.n AS in_gen2
FROM (SELECT date(eventtime) AS day, count(*) AS n FROM gen GROUP BY 1) a
FULL JOIN (SELECT date(eventtime) AS day, count(*) AS n FROM gen2 GROUP BY 1) b ON a.day = b.day;

-- name: join_across_stores_ext_gen
-- Real and generated data share API names: calls per API in both, for APIs present in both.
-- dataset: ext
SELECT x.eventname, x.n AS real_calls, g.n AS generated_calls
FROM (SELECT eventname, count(*) AS n FROM ext GROUP BY 1) x
JOIN (SELECT eventname, count(*) AS n FROM gen GROUP BY 1) g ON g.eventname = x.eventname;

-- name: join_left_across_stores
-- Events of gen2 whose principal never appears in gen (LEFT JOIN ... IS NULL anti-join).
-- dataset: gen
SELECT h.useridentity.type AS identity_type, count(*) AS n
FROM gen2 h
LEFT JOIN (SELECT DISTINCT useridentity.arn AS arn FROM gen) g ON g.arn = h.useridentity.arn
WHERE g.arn IS NULL
GROUP BY 1;

-- name: join_inequality_time_window
-- Failed calls followed within five minutes by a successful call to the same API by the same principal.
-- dataset: gen
SELECT f.eventname, count(DISTINCT f.eventid) AS recovered
FROM $EDS_ID f
JOIN $EDS_ID s
  ON s.useridentity.arn = f.useridentity.arn AND s.eventname = f.eventname
 AND s.eventtime > f.eventtime AND s.eventtime <= f.eventtime + INTERVAL '5' MINUTE
WHERE f.errorcode IS NOT NULL AND s.errorcode IS NULL
GROUP BY f.eventname;

-- name: join_using_clause
-- JOIN ... USING on a shared column name: APIs with both successes and failures.
SELECT eventname, a.n AS successes, b.n AS failures
FROM (SELECT eventname, count(*) AS n FROM $EDS_ID WHERE errorcode IS NULL GROUP BY 1) a
JOIN (SELECT eventname, count(*) AS n FROM $EDS_ID WHERE errorcode IS NOT NULL GROUP BY 1) b USING (eventname);

-- name: join_cross_join_small
-- CROSS JOIN of two small sets: every (region, category) pair with its event count, zeros included.
SELECT r.awsregion, c.eventcategory, count(e.eventid) AS n
FROM (SELECT DISTINCT awsregion FROM $EDS_ID WHERE awsregion IN ('us-east-1', 'eu-west-1', 'us-west-2')) r
CROSS JOIN (SELECT DISTINCT eventcategory FROM $EDS_ID WHERE eventcategory IS NOT NULL) c
LEFT JOIN $EDS_ID e ON e.awsregion = r.awsregion AND e.eventcategory = c.eventcategory
GROUP BY r.awsregion, c.eventcategory;
