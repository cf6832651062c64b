-- Expressions and clauses: CASE, COALESCE, CAST / TRY_CAST, GREATEST, LEAST, IS [NOT] DISTINCT FROM,
-- BETWEEN, DISTINCT, ORDER BY with NULLS FIRST | LAST, LIMIT and OFFSET (always over a total order).

-- name: misc_case_classification
-- Classify callers: human, service, automation, unknown (searched CASE).
SELECT CASE
         WHEN useridentity.type = 'AWSService' OR useridentity.invokedby IS NOT NULL THEN 'service'
         WHEN useragent LIKE 'Mozilla%' OR eventname = 'ConsoleLogin' THEN 'human'
         WHEN useridentity.type IS NULL THEN 'unknown'
         ELSE 'automation'
       END AS caller_kind,
       count(*) AS n
FROM $EDS_ID
GROUP BY 1;

-- name: misc_simple_case
-- Simple CASE on a column, without ELSE (NULL).
SELECT CASE eventcategory WHEN 'Management' THEN 'mgmt' WHEN 'Data' THEN 'data' END AS cat, count(*) AS n
FROM $EDS_ID
GROUP BY 1;

-- name: misc_coalesce_identity
-- A display name for every caller: user name, else role name, else the service, else the type.
SELECT coalesce(useridentity.username, useridentity.sessioncontext.sessionissuer.username, useridentity.invokedby,
                useridentity.type, 'anonymous') AS actor, count(*) AS n
FROM $EDS_ID
GROUP BY 1;

-- name: misc_cast_and_try_cast
-- CAST and TRY_CAST between text, numbers and booleans.
SELECT CAST('42' AS integer) AS i, CAST('42' AS bigint) + 1 AS b, CAST(3 AS double) / 2 AS d, CAST(true AS varchar) AS t,
       CAST('true' AS boolean) AS bt, TRY_CAST('abc' AS integer) AS bad, TRY_CAST('12' AS integer) AS good,
       CAST(12 AS varchar) AS s, CAST(2.5 AS integer) AS rounded, CAST(DATE '2024-03-01' AS varchar) AS day_text,
       TRY_CAST('12.5' AS integer) AS decimal_text, TRY_CAST('+7' AS bigint) AS signed;

-- name: misc_try_cast_request_values
-- Numeric request parameters where they parse (TRY_CAST never fails the query).
SELECT eventname, max(TRY_CAST(requestparameters['maxResults'] AS integer)) AS max_results,
       max(TRY_CAST(requestparameters['durationSeconds'] AS integer)) AS max_duration,
       count(TRY_CAST(requestparameters['bucketName'] AS integer)) AS numeric_bucket_names
FROM $EDS_ID
WHERE requestparameters IS NOT NULL
GROUP BY eventname
HAVING count(*) > 3;

-- name: misc_greatest_least
-- GREATEST / LEAST across times and strings; a NULL argument gives NULL.
SELECT eventid, greatest(eventtime, TIMESTAMP '2024-03-02 00:00:00') AS not_before_2nd,
       least(eventname, eventsource) AS first_name, greatest(errorcode, 'A') AS code_or_null,
       least(1, 5, 3) AS one, greatest(2.5, 1) AS two_and_half
FROM $EDS_ID
WHERE eventname IN ('ConsoleLogin', 'CreateUser', 'DeleteUser');

-- name: misc_is_distinct_from
-- IS [NOT] DISTINCT FROM treats NULL as a value, = does not.
SELECT count_if(errorcode IS DISTINCT FROM 'AccessDenied') AS distinct_from, count_if(errorcode <> 'AccessDenied') AS neq,
       count_if(errorcode IS NOT DISTINCT FROM NULL) AS is_null, count_if(errorcode = NULL) AS eq_null,
       count_if(useridentity.type IS NOT DISTINCT FROM 'IAMUser') AS iam
FROM $EDS_ID;

-- name: misc_between_forms
-- BETWEEN on times, strings and numbers, and NOT BETWEEN.
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE eventtime BETWEEN '2024-03-01 12:00:00' AND '2024-03-01 12:30:00'
  AND eventname BETWEEN 'A' AND 'M'
  AND cardinality(requestparameters) NOT BETWEEN 5 AND 100
GROUP BY eventname;

-- name: misc_order_nulls_first
-- Error codes with counts, NULL first then descending by count (total order: code is unique).
SELECT errorcode, count(*) AS n
FROM $EDS_ID
GROUP BY errorcode
ORDER BY errorcode NULLS FIRST;

-- name: misc_order_desc_default_nulls_last
-- Trino sorts NULLs last by default, also for DESC.
SELECT errorcode, count(*) AS n
FROM $EDS_ID
GROUP BY errorcode
ORDER BY errorcode DESC;

-- name: misc_order_nulls_last_explicit
-- NULLS LAST on an ascending key, then a second key.
SELECT useridentity.type AS t, eventcategory, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2
ORDER BY t ASC NULLS LAST, eventcategory DESC NULLS FIRST;

-- name: misc_limit_total_order
-- The 10 busiest principals (ties broken by the principal, so the top 10 is determined).
SELECT useridentity.arn AS principal, count(*) AS n
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL
GROUP BY useridentity.arn
ORDER BY n DESC, principal
LIMIT 10;

-- name: misc_offset_limit
-- Paging: the second page of 5 APIs by name.
SELECT DISTINCT eventname
FROM $EDS_ID
WHERE eventname IS NOT NULL
ORDER BY eventname
OFFSET 5 LIMIT 5;

-- name: misc_offset_only
-- OFFSET without LIMIT over event sources.
SELECT eventsource, count(*) AS n
FROM $EDS_ID
WHERE eventsource IS NOT NULL
GROUP BY eventsource
ORDER BY eventsource
OFFSET 3;

-- name: misc_distinct_multi
-- DISTINCT over several columns including a struct field and a boolean.
SELECT DISTINCT eventsource, useridentity.type, readonly
FROM $EDS_ID
WHERE eventsource LIKE 's%';

-- name: misc_order_by_expression_not_selected
-- ORDER BY an output alias computed by an expression, with LIMIT on a total order.
SELECT eventname, count(*) AS n, count(DISTINCT useridentity.arn) AS callers
FROM $EDS_ID
GROUP BY eventname
ORDER BY callers DESC, n DESC, eventname
LIMIT 7;

-- name: misc_select_star_filtered
-- SELECT * returns the CloudTrail Lake columns only (no hidden copies).
SELECT *
FROM $EDS_ID
WHERE eventname = 'DeleteBucket' OR eventname = 'CreateRole';

-- name: misc_boolean_logic
-- Three-valued logic in WHERE and in projections.
SELECT readonly, managementevent, readonly AND managementevent AS both_true, readonly OR managementevent AS either,
       NOT readonly AS writes, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3, 4, 5;

-- name: misc_values_table
-- VALUES as a table, joined to the events it names.
SELECT v.name, v.severity, count(e.eventid) AS n
FROM (VALUES ('ConsoleLogin', 1), ('AssumeRole', 2), ('DeleteBucket', 3)) AS v(name, severity)
LEFT JOIN $EDS_ID e ON e.eventname = v.name
GROUP BY v.name, v.severity;

-- name: misc_limit_zero
-- LIMIT 0 returns the columns and no rows.
SELECT eventid, eventname
FROM $EDS_ID
ORDER BY eventid
LIMIT 0;

-- name: misc_arithmetic
-- Integer and double arithmetic, unary minus, modulo, and NULL propagation.
SELECT 7 / 2 AS int_div, -7 / 2 AS neg_int_div, 7 % 3 AS modulo, -7 % 3 AS neg_modulo, 7 / 2e0 AS dbl_div,
       -(3 + 4) * 2 AS neg, 2 + NULL AS plus_null, abs(-5) AS abs5, round(2.567e0, 2) AS rounded;
