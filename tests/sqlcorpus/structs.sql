-- Struct paths at any depth (userIdentity, sessionContext, sessionIssuer, attributes, tlsDetails) and
-- case-insensitive identifiers: CloudTrail Lake documents camelCase names, the schema stores lower case.

-- name: structs_identity_types
-- Who is calling: events per identity type, camelCase spelling.
SELECT userIdentity.type AS identity_type, count(*) AS events
FROM $EDS_ID
GROUP BY userIdentity.type;

-- name: structs_session_issuer_roles
-- Roles behind assumed-role sessions, four levels deep.
SELECT userIdentity.sessionContext.sessionIssuer.userName AS role_name,
       userIdentity.sessionContext.sessionIssuer.arn AS role_arn,
       count(*) AS calls
FROM $EDS_ID
WHERE userIdentity.type = 'AssumedRole'
GROUP BY 1, 2;

-- name: structs_mixed_case_identifiers
-- eventtime, eventTime, EVENTTIME and "eventTime" are one column.
SELECT EVENTNAME, "eventName" AS quoted, min(eventtime) AS first_seen, max(EventTime) AS last_seen
FROM $EDS_ID
WHERE EventSource = 'sts.amazonaws.com'
GROUP BY eventname, "EVENTNAME";

-- name: structs_tls_versions
-- Clients still on old TLS versions.
SELECT tlsDetails.tlsVersion, tlsDetails.cipherSuite, count(*) AS n
FROM $EDS_ID
WHERE tlsDetails IS NOT NULL
GROUP BY tlsDetails.tlsVersion, tlsDetails.cipherSuite;

-- name: structs_tls_host_header
-- Which service endpoints clients connect to (clientProvidedHostHeader).
SELECT eventsource, tlsdetails.clientprovidedhostheader AS host, count(*) AS n
FROM $EDS_ID
WHERE tlsdetails.clientprovidedhostheader LIKE '%.amazonaws.com'
GROUP BY eventsource, tlsdetails.clientprovidedhostheader;

-- name: structs_mfa_sessions
-- Sessions created with and without MFA, by issuer (attributes.mfaAuthenticated).
SELECT userIdentity.sessionContext.attributes.mfaAuthenticated AS mfa,
       userIdentity.sessionContext.sessionIssuer.type AS issuer_type,
       count(*) AS n
FROM $EDS_ID
WHERE userIdentity.sessionContext IS NOT NULL
GROUP BY 1, 2;

-- name: structs_session_creation_date
-- Long-lived sessions: the session was created more than an hour before the call.
SELECT userIdentity.arn, count(*) AS calls
FROM $EDS_ID
WHERE userIdentity.sessionContext.attributes.creationDate < eventTime - INTERVAL '1' HOUR
GROUP BY userIdentity.arn;

-- name: structs_alias_qualified_paths
-- Struct paths through a table alias.
SELECT e.userIdentity.accountId AS account, e.userIdentity.principalId AS principal, count(*) AS n
FROM $EDS_ID e
WHERE e.userIdentity.accountId IS NOT NULL AND e.userIdentity.type = 'IAMUser'
GROUP BY e.userIdentity.accountId, e.userIdentity.principalId;

-- name: structs_invoked_by
-- AWS services calling on a principal's behalf.
SELECT userIdentity.invokedBy AS service, eventName, count(*) AS n
FROM $EDS_ID
WHERE userIdentity.invokedBy IS NOT NULL
GROUP BY 1, 2;

-- name: structs_whole_struct_column
-- The whole tlsDetails struct and a nested struct as values.
SELECT eventid, tlsdetails, useridentity.sessioncontext.sessionissuer AS issuer
FROM $EDS_ID
WHERE eventname = 'AssumeRole' AND tlsdetails IS NOT NULL;

-- name: structs_web_identity
-- Web identity federation: provider of sessions from OIDC (webIdFederationData).
SELECT useridentity.sessioncontext.webidfederationdata.federatedprovider AS provider, count(*) AS n
FROM $EDS_ID
WHERE useridentity.sessioncontext.webidfederationdata.federatedprovider IS NOT NULL
GROUP BY 1;

-- name: structs_access_key_ids
-- Long-term access keys (AKIA) versus temporary credentials (ASIA) per identity type.
SELECT useridentity.type, substr(useridentity.accesskeyid, 1, 4) AS key_prefix, count(*) AS n
FROM $EDS_ID
WHERE useridentity.accesskeyid IS NOT NULL AND useridentity.accesskeyid <> ''
GROUP BY 1, 2;

-- name: structs_root_activity
-- Anything the root user did.
SELECT eventtime, eventname, sourceipaddress, useridentity.arn
FROM $EDS_ID
WHERE useridentity.type = 'Root';
