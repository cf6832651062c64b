-- Aggregates: count, count(DISTINCT), sum, avg, min, max, approx_distinct, arbitrary, count_if, array_agg
-- (with DISTINCT), max_by, min_by; GROUP BY ordinals and expressions; HAVING. array_agg results are sorted
-- (array_sort) or compared as multisets, arbitrary is used only where a group has one value, and max_by /
-- min_by keys are unique, so that every answer is determined by the query.

-- name: agg_errors_by_principal
-- Errors by principal: total calls, failed calls and the error rate.
SELECT useridentity.arn AS principal, count(*) AS calls, count_if(errorcode IS NOT NULL) AS errors,
       avg(CASE WHEN errorcode IS NULL THEN 0 ELSE 1 END) AS error_rate
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL
GROUP BY useridentity.arn
HAVING count_if(errorcode IS NOT NULL) > 0;

-- name: agg_distinct_counts
-- Breadth of activity per account: distinct APIs, services, regions and source IPs.
SELECT recipientaccountid, count(DISTINCT eventname) AS apis, count(DISTINCT eventsource) AS services,
       count(DISTINCT awsregion) AS regions, approx_distinct(sourceipaddress) AS ips, count(*) AS events
FROM $EDS_ID
GROUP BY recipientaccountid;

-- name: agg_count_forms
-- count(*), count(column) and count(DISTINCT column) differ on NULLs.
SELECT count(*) AS all_rows, count(errorcode) AS with_error, count(DISTINCT errorcode) AS distinct_errors,
       count(tlsdetails) AS with_tls, count(DISTINCT useridentity.type) AS identity_types
FROM $EDS_ID;

-- name: agg_sum_avg_min_max
-- Numeric aggregates over request sizes and event times per service.
SELECT eventsource, sum(cardinality(requestparameters)) AS total_keys, avg(cardinality(requestparameters)) AS avg_keys,
       min(eventtime) AS first_seen, max(eventtime) AS last_seen, min(eventname) AS first_api, max(eventname) AS last_api
FROM $EDS_ID
GROUP BY eventsource;

-- name: agg_group_by_ordinals
-- GROUP BY ordinals over expressions.
SELECT date_trunc('day', eventtime) AS day, eventcategory, readonly, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3;

-- name: agg_group_by_expression
-- GROUP BY an expression not in the select list's form (lower of the service), HAVING on an aggregate.
SELECT lower(split_part(eventsource, '.', 1)) AS service, count(*) AS n, count(DISTINCT eventname) AS apis
FROM $EDS_ID
GROUP BY lower(split_part(eventsource, '.', 1))
HAVING count(*) >= 10 AND count(DISTINCT eventname) > 1;

-- name: agg_array_agg_distinct
-- Which regions each principal acts in (array_agg DISTINCT, sorted).
SELECT useridentity.arn AS principal, array_sort(array_agg(DISTINCT awsregion)) AS regions,
       cardinality(array_agg(DISTINCT awsregion)) AS n_regions
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL
GROUP BY useridentity.arn;

-- name: agg_array_agg_unordered
-- Error codes seen per API, as a multiset.
-- unordered-lists
SELECT eventname, array_agg(errorcode) AS codes
FROM $EDS_ID
WHERE errorcode IS NOT NULL
GROUP BY eventname;

-- name: agg_max_by_min_by
-- The latest and earliest API each principal called (eventid, then the API itself, break ties in time).
SELECT useridentity.arn AS principal,
       max_by(eventname, date_format(eventtime, '%Y%m%d%H%i%s') || eventid || eventname) AS last_api,
       min_by(eventname, date_format(eventtime, '%Y%m%d%H%i%s') || eventid || eventname) AS first_api,
       max(eventtime) AS last_time
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL AND eventid IS NOT NULL
GROUP BY useridentity.arn;

-- name: agg_max_by_null_value
-- max_by returns the value at the largest key even when that value is NULL (the value is part of the key, so
-- duplicate event ids cannot make the answer ambiguous).
SELECT eventsource, max_by(errorcode, eventid || coalesce(errorcode, '')) AS error_of_max_id,
       min_by(errorcode, eventid || coalesce(errorcode, '')) AS error_of_min_id
FROM $EDS_ID
WHERE eventid IS NOT NULL
GROUP BY eventsource;

-- name: agg_arbitrary_functional
-- arbitrary of a value determined by the group (the service of an API).
SELECT eventname, arbitrary(eventsource) AS service, count(*) AS n
FROM $EDS_ID
WHERE eventsource = 'iam.amazonaws.com'
GROUP BY eventname;

-- name: agg_count_if_read_write
-- Read versus write calls per principal type.
SELECT useridentity.type, count_if(readonly) AS reads, count_if(NOT readonly) AS writes,
       count_if(readonly IS NULL) AS unknown
FROM $EDS_ID
GROUP BY useridentity.type;

-- name: agg_having_only
-- Principals with calls in more than one region (HAVING on a distinct count not in the select list).
SELECT useridentity.principalid AS principal, count(*) AS n
FROM $EDS_ID
WHERE useridentity.principalid IS NOT NULL
GROUP BY useridentity.principalid
HAVING count(DISTINCT awsregion) > 1;

-- name: agg_global_no_rows
-- Aggregates over no rows: count is 0, the others are NULL.
SELECT count(*) AS n, sum(length(eventname)) AS s, avg(length(eventname)) AS a, min(eventtime) AS mn,
       max(eventname) AS mx, count_if(readonly) AS ci, array_agg(eventname) AS agg
FROM $EDS_ID
WHERE eventname = 'NoSuchEventName';

-- name: agg_sum_integer_and_division
-- Integer division truncates (Trino); a double division does not. (DECIMAL arithmetic keeps Trino's decimal
-- scales, which the oracle does not model: the corpus divides doubles, not decimal literals.)
SELECT awsregion, count(*) / 7 AS weeks_of_7, count(*) % 7 AS remainder, sum(length(eventname)) / count(*) AS avg_len_int,
       CAST(sum(length(eventname)) AS double) / count(*) AS avg_len
FROM $EDS_ID
WHERE awsregion IS NOT NULL
GROUP BY awsregion;

-- name: agg_filter_clause
-- Aggregates with FILTER (WHERE ...).
SELECT eventsource, count(*) FILTER (WHERE errorcode IS NOT NULL) AS failures,
       count(DISTINCT eventname) FILTER (WHERE readonly = false) AS write_apis
FROM $EDS_ID
GROUP BY eventsource;

-- name: agg_group_by_struct_field_and_bool
-- Grouping on struct fields and booleans together.
SELECT useridentity.sessioncontext.sessionissuer.type AS issuer_type, managementevent, readonly, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3;
