-- WITH, derived tables, IN / NOT IN / EXISTS / NOT EXISTS and scalar sub-queries, correlated and not.

-- name: sub_with_chain
-- AssumeRole chains: roles assumed by sessions that themselves came from an assumed role.
WITH assumed AS (
  SELECT useridentity.sessioncontext.sessionissuer.arn AS from_role, requestparameters['roleArn'] AS to_role
  FROM $EDS_ID
  WHERE eventname = 'AssumeRole' AND useridentity.type = 'AssumedRole'
),
hops AS (
  SELECT from_role, to_role, count(*) AS n FROM assumed GROUP BY 1, 2
)
SELECT from_role, to_role, n FROM hops WHERE from_role IS NOT NULL;

-- name: sub_in_list_subquery
-- Everything done by principals that ever failed a call with AccessDenied.
SELECT useridentity.arn AS who, eventname, count(*) AS n
FROM $EDS_ID
WHERE useridentity.arn IN (SELECT useridentity.arn FROM $EDS_ID WHERE errorcode LIKE 'AccessDenied%')
GROUP BY 1, 2;

-- name: sub_not_in_with_nulls
-- NOT IN over a list without NULLs: APIs never called read-only.
SELECT DISTINCT eventname
FROM $EDS_ID
WHERE eventname NOT IN (SELECT eventname FROM $EDS_ID WHERE readonly = true AND eventname IS NOT NULL)
  AND eventsource = 'iam.amazonaws.com';

-- name: sub_not_in_null_semantics
-- NOT IN over a list that contains NULL is never true.
SELECT count(*) AS n
FROM $EDS_ID
WHERE eventname NOT IN (SELECT errorcode FROM $EDS_ID);

-- name: sub_exists_correlated
-- Console logins followed by an IAM write by the same principal (correlated EXISTS).
SELECT l.eventid, l.useridentity.arn AS who
FROM $EDS_ID l
WHERE l.eventname = 'ConsoleLogin'
  AND EXISTS (SELECT 1 FROM $EDS_ID w
              WHERE w.useridentity.arn = l.useridentity.arn AND w.eventsource = 'iam.amazonaws.com'
                AND w.readonly = false AND w.eventtime > l.eventtime);

-- name: sub_not_exists_correlated
-- Principals that only ever read (correlated NOT EXISTS).
SELECT DISTINCT p.useridentity.arn AS reader
FROM $EDS_ID p
WHERE p.useridentity.arn IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM $EDS_ID q WHERE q.useridentity.arn = p.useridentity.arn AND q.readonly = false);

-- name: sub_scalar_uncorrelated
-- Each service's share of all events (uncorrelated scalar sub-query).
SELECT eventsource, count(*) AS n, CAST(count(*) AS double) / (SELECT count(*) FROM $EDS_ID) AS share
FROM $EDS_ID
GROUP BY eventsource;

-- name: sub_scalar_correlated
-- For each principal's error, how many calls that principal made in total (correlated scalar sub-query).
SELECT e.eventid, e.errorcode,
       (SELECT count(*) FROM $EDS_ID a WHERE a.useridentity.arn = e.useridentity.arn) AS principal_calls
FROM $EDS_ID e
WHERE e.errorcode IN ('AccessDenied', 'NoSuchKey', 'VpceAccessDenied', 'TrailNotFoundException');

-- name: sub_derived_table
-- Principals with more than ten calls in one hour, from a derived table of hourly counts.
SELECT principal, max(calls) AS peak_hour_calls, count(*) AS busy_hours
FROM (
  SELECT useridentity.arn AS principal, date_trunc('hour', eventtime) AS h, count(*) AS calls
  FROM $EDS_ID
  GROUP BY 1, 2
) AS hourly
WHERE calls > 10
GROUP BY principal;

-- name: sub_with_reused_twice
-- A CTE used twice: APIs called by both human (console) and automated (SDK) clients.
WITH calls AS (
  SELECT eventname, CASE WHEN useragent LIKE 'Mozilla%' OR useragent LIKE '%console%' THEN 'human' ELSE 'automation' END AS kind
  FROM $EDS_ID
)
SELECT h.eventname
FROM (SELECT DISTINCT eventname FROM calls WHERE kind = 'human') h
JOIN (SELECT DISTINCT eventname FROM calls WHERE kind = 'automation') a ON a.eventname = h.eventname;

-- name: sub_in_scalar_list
-- IN with a literal list, and a correlated scalar max in the WHERE clause.
SELECT e.useridentity.arn AS who, e.eventname, e.eventtime
FROM $EDS_ID e
WHERE e.eventname IN ('DeleteBucket', 'DeleteTrail', 'StopLogging', 'DeleteUser', 'PutBucketPolicy')
  AND e.eventtime = (SELECT max(x.eventtime) FROM $EDS_ID x WHERE x.eventname = e.eventname);

-- name: sub_nested_with
-- Nested sub-queries: the error codes of the busiest region.
WITH by_region AS (SELECT awsregion, count(*) AS n FROM $EDS_ID GROUP BY awsregion),
     top AS (SELECT awsregion FROM by_region WHERE n = (SELECT max(n) FROM by_region))
SELECT errorcode, count(*) AS n
FROM $EDS_ID
WHERE awsregion IN (SELECT awsregion FROM top) AND errorcode IS NOT NULL
GROUP BY errorcode;

-- name: sub_exists_uncorrelated
-- Uncorrelated EXISTS gates the whole query.
SELECT count(*) AS n
FROM $EDS_ID
WHERE EXISTS (SELECT 1 FROM $EDS_ID WHERE eventname = 'ConsoleLogin')
  AND eventsource = 'signin.amazonaws.com';
