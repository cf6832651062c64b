-- The free-form objects (requestParameters, responseElements, additionalEventData, ...) are map(varchar,
-- varchar): element_at, subscript, map_keys, map_values, cardinality. A subscript of a missing key is NULL
-- here (as in DuckDB and element_at); Trino itself raises for it.

-- name: maps_deleted_buckets
-- Who deleted which buckets.
SELECT eventtime, useridentity.arn AS actor, element_at(requestparameters, 'bucketName') AS bucket
FROM $EDS_ID
WHERE eventsource = 's3.amazonaws.com' AND eventname = 'DeleteBucket';

-- name: maps_subscript_bucket_activity
-- Bucket-level activity by bucket, with the subscript form.
SELECT requestParameters['bucketName'] AS bucket, eventName, count(*) AS n
FROM $EDS_ID
WHERE eventSource = 's3.amazonaws.com' AND requestParameters['bucketName'] IS NOT NULL
GROUP BY requestParameters['bucketName'], eventName;

-- name: maps_element_at_missing_key
-- element_at of a key no event has is NULL for every row.
SELECT count(*) AS events, count(element_at(requestparameters, 'noSuchParameter')) AS with_key
FROM $EDS_ID;

-- name: maps_assume_role_targets
-- Which roles get assumed, by whom, under which session names.
SELECT requestparameters['roleArn'] AS role_arn, requestparameters['roleSessionName'] AS session_name,
       useridentity.type AS caller_type, count(*) AS n
FROM $EDS_ID
WHERE eventname = 'AssumeRole' AND element_at(requestparameters, 'roleArn') IS NOT NULL
GROUP BY 1, 2, 3;

-- name: maps_keys_per_event
-- The shape of request parameters per API: how many keys and which.
SELECT eventname, cardinality(requestparameters) AS n_keys, array_sort(map_keys(requestparameters)) AS keys
FROM $EDS_ID
WHERE requestparameters IS NOT NULL AND eventsource IN ('iam.amazonaws.com', 'sts.amazonaws.com')
GROUP BY 1, 2, 3;

-- name: maps_values_contain
-- Events whose request parameters mention a given value anywhere.
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE contains(map_values(requestparameters), 'false')
GROUP BY eventname;

-- name: maps_console_login_mfa
-- Console sign-ins with the MFA flag from additionalEventData and the outcome from responseElements.
SELECT useridentity.arn AS who, additionaleventdata['MFAUsed'] AS mfa_used,
       responseelements['ConsoleLogin'] AS outcome, count(*) AS n
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin'
GROUP BY 1, 2, 3;

-- name: maps_cardinality_histogram
-- Distribution of request-parameter counts.
SELECT cardinality(requestparameters) AS n_keys, count(*) AS events
FROM $EDS_ID
GROUP BY cardinality(requestparameters);

-- name: maps_whole_map_values
-- Maps as result values (compared as key/value sets).
SELECT eventid, requestparameters, responseelements
FROM $EDS_ID
WHERE eventname IN ('CreateAccessKey', 'DeleteAccessKey', 'UpdateAccessKey', 'CreateUser', 'DeleteUser');

-- name: maps_s3_data_bytes
-- Bytes moved by S3 data events (additionalEventData numbers are text).
SELECT eventname, sum(CAST(additionaleventdata['bytesTransferredOut'] AS bigint)) AS bytes_out,
       sum(TRY_CAST(additionaleventdata['bytesTransferredIn'] AS double)) AS bytes_in
FROM $EDS_ID
WHERE eventsource = 's3.amazonaws.com' AND additionaleventdata['bytesTransferredOut'] IS NOT NULL
GROUP BY eventname;

-- name: maps_keys_unnest
-- The most used request parameter names (map_keys unnested).
SELECT k AS parameter, count(*) AS n
FROM $EDS_ID CROSS JOIN UNNEST(map_keys(requestparameters)) AS t(k)
GROUP BY k
HAVING count(*) >= 20;

-- name: maps_instance_type
-- Instance types requested by RunInstances.
SELECT requestparameters['instanceType'] AS instance_type, awsregion, count(*) AS launches
FROM $EDS_ID
WHERE eventname = 'RunInstances'
GROUP BY 1, 2;
