-- Arrays: resources (array of row(accountid, type, arn, arnprefix)) through CROSS JOIN UNNEST, and the array
-- functions cardinality, contains, array_distinct, array_sort, array_max, array_min, slice, element_at,
-- transform and filter with lambdas.

-- name: arrays_s3_object_access
-- S3 object reads and writes per bucket, from the resources list.
SELECT r.type AS resource_type, split_part(r.arn, '/', 1) AS bucket_arn, eventname, count(*) AS n
FROM $EDS_ID CROSS JOIN UNNEST(resources) AS t(r)
WHERE eventsource = 's3.amazonaws.com' AND r.type = 'AWS::S3::Object'
GROUP BY 1, 2, 3;

-- name: arrays_resource_types
-- Which resource types appear in events, and in how many accounts.
SELECT r.type, count(*) AS mentions, count(DISTINCT r.accountid) AS accounts
FROM $EDS_ID CROSS JOIN UNNEST(resources) AS t(r)
GROUP BY r.type;

-- name: arrays_resources_per_event
-- Events that touch several resources.
SELECT eventname, cardinality(resources) AS n_resources, count(*) AS events
FROM $EDS_ID
WHERE cardinality(resources) > 1
GROUP BY 1, 2;

-- name: arrays_unnest_with_alias_and_filter
-- KMS keys used, by resource ARN, with the unnested row's fields in WHERE.
SELECT u.r.arn AS key_arn, count(*) AS uses
FROM $EDS_ID e CROSS JOIN UNNEST(e.resources) AS u(r)
WHERE u.r.type = 'AWS::KMS::Key' AND e.eventname IN ('Decrypt', 'GenerateDataKey', 'Encrypt')
GROUP BY u.r.arn;

-- name: arrays_transform_types
-- The resource types of each event as an array (transform with a lambda).
SELECT eventid, transform(resources, x -> x.type) AS types
FROM $EDS_ID
WHERE eventname IN ('CopyObject', 'PutObject', 'DeleteObject', 'DeleteBucket', 'CreateBucket')
  AND resources IS NOT NULL;

-- name: arrays_filter_buckets
-- Keep only the bucket resources of each event (filter with a lambda), then count them.
SELECT eventname, cardinality(filter(resources, r -> r.type = 'AWS::S3::Bucket')) AS buckets, count(*) AS n
FROM $EDS_ID
WHERE resources IS NOT NULL
GROUP BY 1, 2;

-- name: arrays_contains_type
-- Events whose resources include an IAM role (contains over transformed types).
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE contains(transform(resources, r -> r.type), 'AWS::IAM::Role')
GROUP BY eventname;

-- name: arrays_distinct_sorted_types
-- Distinct resource types per API, in order of first appearance and sorted.
SELECT eventname,
       array_sort(array_distinct(transform(resources, r -> r.type))) AS sorted_types,
       cardinality(array_distinct(transform(resources, r -> r.type))) AS n_types
FROM $EDS_ID
WHERE cardinality(resources) > 0
GROUP BY 1, 2, 3;

-- name: arrays_max_min_arn
-- Largest and smallest ARN among an event's resources.
SELECT eventid, array_max(transform(resources, r -> r.arn)) AS max_arn,
       array_min(transform(resources, r -> r.arn)) AS min_arn
FROM $EDS_ID
WHERE cardinality(resources) >= 2;

-- name: arrays_literal_functions
-- Array functions on literals: slice is (start, length), indexes are 1-based, element_at past the end is NULL.
SELECT slice(ARRAY[10, 20, 30, 40, 50], 2, 3) AS middle,
       slice(ARRAY[10, 20, 30, 40, 50], -2, 2) AS last_two,
       ARRAY[10, 20, 30][1] AS first,
       element_at(ARRAY[10, 20, 30], 3) AS third,
       element_at(ARRAY[10, 20, 30], 5) AS past_end,
       element_at(ARRAY[10, 20, 30], -1) AS from_end,
       array_distinct(ARRAY[3, 1, 3, 2, 1]) AS distinct_in_order,
       array_sort(ARRAY['b', 'c', 'a']) AS sorted,
       array_max(ARRAY[4, 9, 2]) AS biggest,
       array_min(ARRAY[4, 9, 2]) AS smallest,
       cardinality(ARRAY[]) AS empty;

-- name: arrays_first_resource
-- The first resource of each event (subscript of an array of rows).
SELECT resources[1].type AS first_type, element_at(resources, 1).arn AS first_arn, eventname
FROM $EDS_ID
WHERE cardinality(resources) >= 1 AND eventsource IN ('s3.amazonaws.com', 'iam.amazonaws.com');

-- name: arrays_slice_resources
-- The first two resource ARNs of multi-resource events.
SELECT eventid, slice(transform(resources, r -> r.arn), 1, 2) AS first_two
FROM $EDS_ID
WHERE cardinality(resources) > 2;

-- name: arrays_unnest_left_join
-- Events with and without resources (LEFT JOIN UNNEST keeps events whose list is empty or NULL).
SELECT eventsource, count(*) AS rows_out, count(r.arn) AS with_resource
FROM $EDS_ID LEFT JOIN UNNEST(resources) AS t(r) ON true
WHERE eventsource IN ('kms.amazonaws.com', 'sts.amazonaws.com', 'ec2.amazonaws.com')
GROUP BY eventsource;

-- name: arrays_transform_arithmetic
-- Lambdas over scalars: transform and filter with arithmetic and string functions.
SELECT transform(ARRAY[1, 2, 3], x -> x * 10) AS tens,
       filter(ARRAY[5, 12, 7, 30], x -> x > 6) AS big,
       transform(ARRAY['Get', 'Put'], s -> lower(s) || 'object') AS names,
       filter(ARRAY['a', NULL, 'b'], s -> s IS NOT NULL) AS non_null;
