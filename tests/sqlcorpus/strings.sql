-- Strings: lower, upper, length, substr, split_part, replace, concat, ||, strpos, trim, regexp_like,
-- regexp_extract, regexp_replace, LIKE ... ESCAPE, starts_with. Regular expressions stay inside the syntax
-- Java and RE2 share.

-- name: strings_user_agent_family
-- Client families from the user agent (split_part on '/', lower).
SELECT lower(split_part(useragent, '/', 1)) AS client, count(*) AS n
FROM $EDS_ID
WHERE useragent IS NOT NULL
GROUP BY 1
HAVING count(*) > 2;

-- name: strings_cli_versions
-- AWS CLI versions in use (regexp_extract with a group).
SELECT regexp_extract(useragent, 'aws-cli/([0-9]+\.[0-9]+)', 1) AS cli_version, count(*) AS n
FROM $EDS_ID
WHERE regexp_like(useragent, '^aws-cli/')
GROUP BY 1;

-- name: strings_regexp_extract_no_match
-- regexp_extract is NULL where the pattern does not match.
SELECT eventsource, regexp_extract(useragent, 'Terraform/[0-9.]+') AS terraform, count(*) AS n
FROM $EDS_ID
WHERE eventsource IN ('ec2.amazonaws.com', 'iam.amazonaws.com', 's3.amazonaws.com')
GROUP BY 1, 2;

-- name: strings_arn_parts
-- Account and resource name out of principal ARNs (split_part, strpos, substr).
SELECT split_part(useridentity.arn, ':', 5) AS account,
       substr(useridentity.arn, strpos(useridentity.arn, '/') + 1) AS resource,
       split_part(useridentity.arn, '/', 3) AS session_or_null,
       count(*) AS n
FROM $EDS_ID
WHERE useridentity.arn LIKE 'arn:aws:%'
GROUP BY 1, 2, 3;

-- name: strings_service_names
-- Short service names: replace the domain, upper-case, concat and || spellings.
SELECT replace(eventsource, '.amazonaws.com', '') AS service,
       upper(replace(eventsource, '.amazonaws.com')) AS service_upper,
       concat(replace(eventsource, '.amazonaws.com', ''), ':', eventname) AS action,
       replace(eventsource, '.amazonaws.com', '') || ':' || eventname AS action2,
       count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3, 4;

-- name: strings_concat_null
-- concat and || of a NULL are NULL.
SELECT eventid, concat(errorcode, ': ', errormessage) AS error_text, errorcode || '!' AS bang
FROM $EDS_ID
WHERE eventname IN ('GetObject', 'DeleteBucket', 'ConsoleLogin', 'CreateUser') AND eventsource IS NOT NULL;

-- name: strings_like_escape
-- LIKE with an escaped wildcard: error codes with a literal underscore or dot.
SELECT errorcode, count(*) AS n
FROM $EDS_ID
WHERE errorcode LIKE '%\_%' ESCAPE '\' OR errorcode LIKE 'Client.%' OR errorcode LIKE '%!%%' ESCAPE '!'
GROUP BY errorcode;

-- name: strings_like_patterns
-- LIKE with _ and %, and NOT LIKE.
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE eventname LIKE 'Get_____' OR (eventname LIKE 'Describe%' AND eventname NOT LIKE '%s')
GROUP BY eventname;

-- name: strings_starts_with
-- Principals whose access keys are long-term (starts_with).
SELECT useridentity.username, starts_with(useridentity.accesskeyid, 'AKIA') AS long_term, count(*) AS n
FROM $EDS_ID
WHERE useridentity.type = 'IAMUser'
GROUP BY 1, 2;

-- name: strings_trim_length
-- trim and length on padded literals and on data.
SELECT trim('  padded  ') AS t, length(trim('  padded  ')) AS tl, length('  padded  ') AS l,
       length(eventname) AS name_length, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3, 4;

-- name: strings_regexp_replace_mask
-- Mask digits in source IPs and swap the first two octets with group references.
SELECT sourceipaddress,
       regexp_replace(sourceipaddress, '[0-9]', 'x') AS masked,
       regexp_replace(sourceipaddress, '^([0-9]+)\.([0-9]+)\.', '$2.$1.') AS swapped
FROM $EDS_ID
WHERE regexp_like(sourceipaddress, '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$')
GROUP BY sourceipaddress;

-- name: strings_regexp_like_ips
-- Calls from private address ranges versus public ones.
SELECT CASE WHEN regexp_like(sourceipaddress, '^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.)') THEN 'private'
            WHEN regexp_like(sourceipaddress, '^[0-9.]+$') THEN 'public'
            ELSE 'service' END AS origin,
       count(*) AS n
FROM $EDS_ID
GROUP BY 1;

-- name: strings_substr_forms
-- substr with and without a length, from the end, and past the end.
SELECT substr('CloudTrail', 6) AS tail, substr('CloudTrail', 1, 5) AS head, substr('CloudTrail', -5) AS last5,
       substr('CloudTrail', 6, 100) AS long_len, strpos('CloudTrail', 'Trail') AS pos, strpos('CloudTrail', 'x') AS none,
       split_part('a.b.c', '.', 2) AS part2, split_part('a.b.c', '.', 4) AS part4;

-- name: strings_error_messages
-- Access-denied messages naming the denied action (regexp_extract whole match).
SELECT errorcode, regexp_extract(errormessage, 'not authorized to perform: [a-zA-Z0-9]+:[A-Za-z0-9]+') AS denied,
       count(*) AS n
FROM $EDS_ID
WHERE errorcode IN ('AccessDenied', 'AccessDeniedException', 'Client.UnauthorizedOperation')
GROUP BY 1, 2;

-- name: strings_case_insensitive_search
-- Case-insensitive matching with lower/upper.
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE lower(eventname) LIKE '%bucket%' OR upper(eventsource) = 'SIGNIN.AMAZONAWS.COM'
GROUP BY eventname;

-- name: strings_comparison_ordering
-- String comparison is by code point: upper-case names sort before lower-case ones.
SELECT eventname, eventname < 'a' AS before_lower, eventname >= 'Get' AND eventname < 'H' AS g_range
FROM $EDS_ID
WHERE eventsource = 'iam.amazonaws.com'
GROUP BY 1;
