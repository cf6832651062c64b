-- Set operations: UNION (distinct), UNION ALL, EXCEPT, INTERSECT, within one store and across stores, with
-- ORDER BY over the whole set.

-- name: set_union_ips
-- Source IPs of console logins or of IAM writes, once each.
SELECT sourceipaddress AS ip FROM $EDS_ID WHERE eventname = 'ConsoleLogin'
UNION
SELECT sourceipaddress FROM $EDS_ID WHERE eventsource = 'iam.amazonaws.com' AND readonly = false;

-- name: set_union_all_counts
-- UNION ALL keeps duplicates: one row per (kind, principal) from two different filters.
SELECT 'error' AS kind, useridentity.arn AS who FROM $EDS_ID WHERE errorcode = 'AccessDenied'
UNION ALL
SELECT 'root', useridentity.arn FROM $EDS_ID WHERE useridentity.type = 'Root'
UNION ALL
SELECT 'delete', useridentity.arn FROM $EDS_ID WHERE eventname LIKE 'Delete%' AND eventsource = 'iam.amazonaws.com';

-- name: set_except_apis
-- APIs called with long-term keys but never with temporary ones.
SELECT eventname FROM $EDS_ID WHERE useridentity.accesskeyid LIKE 'AKIA%'
EXCEPT
SELECT eventname FROM $EDS_ID WHERE useridentity.accesskeyid LIKE 'ASIA%';

-- name: set_intersect_regions
-- Regions with both data events and management events.
SELECT awsregion FROM $EDS_ID WHERE eventcategory = 'Data'
INTERSECT
SELECT awsregion FROM $EDS_ID WHERE eventcategory = 'Management';

-- name: set_union_across_stores_ordered
-- Event categories across both generated stores with totals, ordered.
-- dataset: gen
SELECT 'gen' AS store, eventcategory, count(*) AS n FROM gen GROUP BY eventcategory
UNION ALL
SELECT 'gen2', eventcategory, count(*) FROM gen2 GROUP BY eventcategory
ORDER BY store, eventcategory;

-- name: set_except_across_stores
-- APIs seen in gen that gen2 (a smaller sample of the same accounts) never saw.
-- dataset: gen
SELECT eventsource, eventname FROM gen
EXCEPT
SELECT eventsource, eventname FROM gen2;

-- name: set_intersect_across_ext
-- Error codes that occur in both the real and the generated data.
-- dataset: ext
SELECT errorcode FROM ext WHERE errorcode IS NOT NULL
INTERSECT
SELECT errorcode FROM gen;

-- name: set_union_in_subquery
-- A UNION inside a derived table, aggregated.
SELECT kind, count(*) AS n
FROM (
  SELECT 'read' AS kind, eventid FROM $EDS_ID WHERE readonly = true
  UNION ALL
  SELECT 'write', eventid FROM $EDS_ID WHERE readonly = false
) t
GROUP BY kind;

-- name: set_union_with_nulls
-- UNION treats NULLs as equal when removing duplicates.
SELECT errorcode FROM $EDS_ID WHERE eventsource = 'kms.amazonaws.com'
UNION
SELECT errorcode FROM $EDS_ID WHERE eventsource = 'sts.amazonaws.com';
