-- The kinds of sample queries AWS publishes for CloudTrail Lake (console "Sample queries" and the user guide),
-- adapted: `$EDS_ID` as in the samples, relative windows (`CURRENT_TIMESTAMP - 1 week`) anchored on fixed
-- times so the answers do not depend on the day the tests run, and bucket or user names that exist in the
-- data. ORDER BY without LIMIT may tie: only the order of the sort keys is compared.

-- name: sample_principals_calling_api_on_date
-- Find all principal IDs who called a particular API on a specific date.
SELECT DISTINCT userIdentity.principalId
FROM $EDS_ID
WHERE eventName = 'ConsoleLogin' AND eventTime > '2024-03-01 00:00:00' AND eventTime < '2024-03-02 00:00:00';

-- name: sample_apis_called_by_user
-- Find all APIs called by a specific user in a time window.
SELECT eventID, eventName, eventSource, eventTime
FROM $EDS_ID
WHERE userIdentity.userName = 'christophe' OR userIdentity.userName LIKE 'bob.%'
  AND eventTime > '2024-03-01 00:00:00';

-- name: sample_api_counts_last_week
-- Find the number of API calls grouped by event name and source within the past week (of 2024-03-04).
SELECT eventSource, eventName, COUNT(*) AS apiCount
FROM $EDS_ID
WHERE eventTime > DATE_ADD('week', -1, TIMESTAMP '2024-03-04 00:00:00')
GROUP BY eventSource, eventName
ORDER BY apiCount DESC;

-- name: sample_console_logins_in_regions
-- Find console sign-ins in a set of regions.
SELECT eventTime, userIdentity.arn, awsRegion, sourceIPAddress
FROM $EDS_ID
WHERE awsRegion IN ('us-east-1', 'us-west-2') AND eventName = 'ConsoleLogin';

-- name: sample_s3_get_put_per_bucket
-- Find the number of S3 Get and Put API calls per bucket.
SELECT element_at(requestParameters, 'bucketName') AS bucket, eventName, COUNT(*) AS requestCount
FROM $EDS_ID
WHERE eventSource = 's3.amazonaws.com' AND eventName IN ('GetObject', 'PutObject')
GROUP BY element_at(requestParameters, 'bucketName'), eventName
ORDER BY requestCount DESC;

-- name: sample_outdated_tls
-- Find calls made with TLS older than 1.3, per service.
SELECT eventSource, COUNT(*) AS numOutdatedTlsCalls
FROM $EDS_ID
WHERE tlsDetails.tlsVersion IN ('TLSv1', 'TLSv1.1', 'TLSv1.2') AND eventTime > '2015-01-01 00:00:00'
GROUP BY eventSource
ORDER BY numOutdatedTlsCalls DESC;

-- name: sample_tls_versions_by_principal
-- TLS versions used by each principal.
SELECT userIdentity.arn, tlsDetails.tlsVersion, COUNT(*) AS calls
FROM $EDS_ID
WHERE tlsDetails.tlsVersion IS NOT NULL
GROUP BY userIdentity.arn, tlsDetails.tlsVersion;

-- name: sample_access_denied_top_callers
-- Find the principals with the most access-denied errors.
SELECT userIdentity.arn, COUNT(*) AS deniedCount
FROM $EDS_ID
WHERE errorCode IN ('AccessDenied', 'AccessDeniedException', 'Client.UnauthorizedOperation')
GROUP BY userIdentity.arn
ORDER BY deniedCount DESC, userIdentity.arn;

-- name: sample_console_login_without_mfa
-- Find console sign-ins without MFA.
SELECT userIdentity.arn, eventTime, sourceIPAddress, element_at(additionalEventData, 'MFAUsed') AS mfaUsed
FROM $EDS_ID
WHERE eventName = 'ConsoleLogin' AND element_at(additionalEventData, 'MFAUsed') = 'No';

-- name: sample_console_login_failures
-- Find failed console sign-ins and their error messages.
SELECT eventTime, userIdentity.arn, sourceIPAddress, errorMessage
FROM $EDS_ID
WHERE eventName = 'ConsoleLogin' AND (element_at(responseElements, 'ConsoleLogin') = 'Failure' OR errorMessage IS NOT NULL);

-- name: sample_deleted_buckets
-- Find who deleted S3 buckets, and when.
SELECT eventTime, userIdentity.arn, sourceIPAddress, element_at(requestParameters, 'bucketName') AS bucketName,
       errorCode
FROM $EDS_ID
WHERE eventSource = 's3.amazonaws.com' AND eventName = 'DeleteBucket'
ORDER BY eventTime;

-- name: sample_security_group_changes
-- Find changes to security groups.
SELECT eventTime, eventName, userIdentity.arn, element_at(requestParameters, 'groupId') AS groupId
FROM $EDS_ID
WHERE eventSource = 'ec2.amazonaws.com'
  AND eventName IN ('AuthorizeSecurityGroupIngress', 'AuthorizeSecurityGroupEgress', 'RevokeSecurityGroupIngress',
                    'RevokeSecurityGroupEgress', 'CreateSecurityGroup', 'DeleteSecurityGroup');

-- name: sample_trail_tampering
-- Find attempts to stop or change CloudTrail logging.
SELECT eventTime, eventName, userIdentity.arn, element_at(requestParameters, 'name') AS trail, errorCode
FROM $EDS_ID
WHERE eventSource = 'cloudtrail.amazonaws.com'
  AND eventName IN ('StopLogging', 'DeleteTrail', 'UpdateTrail', 'PutEventSelectors');

-- name: sample_iam_key_lifecycle
-- Find access key creation, updates and deletion per user.
SELECT element_at(requestParameters, 'userName') AS userName, eventName, COUNT(*) AS n
FROM $EDS_ID
WHERE eventSource = 'iam.amazonaws.com' AND eventName IN ('CreateAccessKey', 'UpdateAccessKey', 'DeleteAccessKey')
GROUP BY 1, 2;

-- name: sample_resources_accessed_by_role
-- Find the resources accessed by assumed roles (resources UNNEST).
SELECT userIdentity.sessionContext.sessionIssuer.userName AS roleName, r.type AS resourceType, COUNT(DISTINCT r.arn) AS resources
FROM $EDS_ID CROSS JOIN UNNEST(resources) AS t(r)
WHERE userIdentity.type = 'AssumedRole'
GROUP BY 1, 2;

-- name: sample_vpce_access_denied
-- Network activity: VPC endpoint access denied events per endpoint and service.
SELECT vpcEndpointId, eventSource, COUNT(*) AS denied
FROM $EDS_ID
WHERE eventCategory = 'NetworkActivity' AND errorCode = 'VpceAccessDenied'
GROUP BY vpcEndpointId, eventSource
ORDER BY denied DESC, vpcEndpointId, eventSource;

-- name: sample_data_events_by_user_agent
-- Data events per user agent family.
SELECT split_part(userAgent, ' ', 1) AS agent, COUNT(*) AS n
FROM $EDS_ID
WHERE eventCategory = 'Data'
GROUP BY 1;

-- name: sample_activity_by_source_ip
-- Find all activity from a set of source IP addresses seen on console sign-ins.
SELECT sourceIPAddress, eventName, COUNT(*) AS n
FROM $EDS_ID
WHERE sourceIPAddress IN (SELECT sourceIPAddress FROM $EDS_ID WHERE eventName = 'ConsoleLogin')
GROUP BY 1, 2;

-- name: sample_root_and_mfa_overview
-- Overview of root activity and sign-in MFA usage per account.
SELECT recipientAccountId, COUNT_IF(userIdentity.type = 'Root') AS rootEvents,
       COUNT_IF(eventName = 'ConsoleLogin' AND element_at(additionalEventData, 'MFAUsed') = 'Yes') AS mfaLogins,
       COUNT_IF(eventName = 'ConsoleLogin') AS logins
FROM $EDS_ID
GROUP BY recipientAccountId;
