-- Longer investigations that combine features, the way an incident responder writes them.

-- name: inv_new_principal_first_day
-- Each principal's first day of activity, the APIs used that day and their regions.
WITH firsts AS (
  SELECT useridentity.arn AS who, min(date(eventtime)) AS first_day
  FROM $EDS_ID
  WHERE useridentity.arn IS NOT NULL
  GROUP BY 1
)
SELECT f.who, f.first_day, array_sort(array_agg(DISTINCT e.eventname)) AS apis,
       approx_distinct(e.awsregion) AS regions, day_of_year(f.first_day) AS doy, week(f.first_day) AS wk
FROM firsts f JOIN $EDS_ID e ON e.useridentity.arn = f.who AND date(e.eventtime) = f.first_day
GROUP BY f.who, f.first_day;

-- name: inv_error_timeline
-- Errors per principal with a running total in time order and the clock time of each.
-- dataset: gen
SELECT eventid, useridentity.arn AS who, hour(eventtime) AS h, minute(eventtime) AS mi, second(eventtime) AS s,
       day(eventtime) AS d,
       sum(1) OVER (PARTITION BY useridentity.arn ORDER BY eventtime, eventid) AS running_errors
FROM $EDS_ID
WHERE errorcode IS NOT NULL;

-- name: inv_sensitive_values
-- Events whose request mentions a production resource anywhere in its values (map_values + filter lambda).
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE cardinality(filter(map_values(requestparameters), v -> v LIKE '%prod%')) > 0
GROUP BY eventname;

-- name: inv_normalised_agents
-- Normalise user agents: trim, strip versions with regexp_replace, keep the family.
SELECT trim(regexp_replace(split_part(useragent, ' ', 1), '/[0-9][0-9.]*', '')) AS family,
       arbitrary(CASE WHEN starts_with(useragent, 'aws-cli') THEN 'cli' END) AS cli_marker,
       count(*) AS n
FROM $EDS_ID
WHERE useragent IS NOT NULL AND starts_with(useragent, 'aws-cli')
GROUP BY 1;

-- name: inv_escaped_resource_names
-- Resource names with literal underscores (LIKE ... ESCAPE) in role ARNs, with the path cleaned by replace.
SELECT replace(useridentity.sessioncontext.sessionissuer.arn, 'arn:aws:iam::', '') AS role, count(*) AS n
FROM $EDS_ID
WHERE useridentity.sessioncontext.sessionissuer.username LIKE '%\_%' ESCAPE '\'
GROUP BY 1;

-- name: inv_recent_relative_window
-- Relative windows that hold whenever the tests run: no event is newer than now(), none older than 50 years.
SELECT eventsource, count(*) AS n, max(eventtime) <= current_timestamp AS all_past
FROM $EDS_ID
WHERE eventtime > now() - INTERVAL '18250' DAY AND eventtime <= current_timestamp
GROUP BY eventsource;

-- name: inv_json_request_digest
-- A compact digest of launch requests: the items array re-serialised with json_format.
SELECT eventid, json_format(json_extract(requestparameters['instancesSet'], '$.items')) AS items_json
FROM $EDS_ID
WHERE eventname = 'RunInstances';

-- name: inv_changed_identity_type
-- Access keys whose events disagree on the principal (IS DISTINCT FROM across a self-join on the key).
SELECT a.useridentity.accesskeyid AS key_id, count(*) AS pairs
FROM $EDS_ID a JOIN $EDS_ID b
  ON a.useridentity.accesskeyid = b.useridentity.accesskeyid AND a.eventid < b.eventid
WHERE a.useridentity.principalid IS DISTINCT FROM b.useridentity.principalid
  AND a.useridentity.accesskeyid <> ''
GROUP BY 1;

-- name: inv_same_region_calls
-- Calls whose region matches the region in the session issuer's ARN, or both unknown (IS NOT DISTINCT FROM).
SELECT awsregion, count(*) AS n
FROM $EDS_ID
WHERE awsregion IS NOT DISTINCT FROM nullif(split_part(useridentity.arn, ':', 4), '')
GROUP BY awsregion;

-- name: inv_time_bounds_greatest_least
-- Clamp each principal's activity span into an investigation window (GREATEST / LEAST).
SELECT useridentity.arn AS who,
       greatest(min(eventtime), TIMESTAMP '2024-03-02 00:00:00') AS window_start,
       least(max(eventtime), TIMESTAMP '2024-03-02 23:59:59') AS window_end
FROM $EDS_ID
WHERE useridentity.arn IS NOT NULL
GROUP BY useridentity.arn
HAVING least(max(eventtime), TIMESTAMP '2024-03-02 23:59:59') > greatest(min(eventtime), TIMESTAMP '2024-03-02 00:00:00');

-- name: inv_right_join_denied_services
-- Every service with the number of distinct principals denied there (RIGHT JOIN keeps services without denials).
SELECT s.eventsource, coalesce(d.denied_principals, 0) AS denied_principals
FROM (SELECT eventsource, count(DISTINCT useridentity.arn) AS denied_principals FROM $EDS_ID
      WHERE errorcode LIKE '%Denied%' GROUP BY 1) d
RIGHT JOIN (SELECT DISTINCT eventsource FROM $EDS_ID WHERE eventsource IS NOT NULL) s
  ON s.eventsource = d.eventsource;

-- name: inv_ranked_error_codes_nulls_last
-- Error codes by frequency with the success bucket (NULL code) placed last explicitly.
SELECT errorcode, count(*) AS n
FROM $EDS_ID
GROUP BY errorcode
ORDER BY errorcode ASC NULLS LAST;

-- name: inv_login_sources
-- Per principal, distinct sign-in source IPs and the countries of the AWS region list (array_agg DISTINCT).
SELECT useridentity.arn AS who, array_sort(array_agg(DISTINCT sourceipaddress)) AS ips, count(*) AS logins
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin'
GROUP BY 1;

-- name: inv_daily_unique_callers
-- Daily unique callers and the change from the previous day.
SELECT day, callers, callers - lag(callers) OVER (ORDER BY day) AS change
FROM (SELECT date(eventtime) AS day, approx_distinct(useridentity.arn) AS callers FROM $EDS_ID GROUP BY 1);
