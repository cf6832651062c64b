"""The Arrow schema of an event row: the CloudTrail Lake SQL schema plus flat copies of hot fields.

Column names are lower-case, as in CloudTrail Lake's published schema; the SQL layer matches identifiers
case-insensitively. `FIELD_MAP` records which JSON key feeds which column so the converter and the docs
cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa

STR = pa.string()
FREEFORM = pa.map_(pa.string(), pa.string())
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _struct(*fields: str | tuple[str, pa.DataType]) -> pa.StructType:
    return pa.struct([(f, STR) if isinstance(f, str) else f for f in fields])


# (json key, column name, nested spec) for the userIdentity struct. A nested spec is a list of the same
# triples; None means a string leaf. The Lake schema's misspelling `credentiaisissuedto` is kept on purpose
# so queries written for CloudTrail Lake work unchanged.
USERIDENTITY_FIELDS: list = [
    ("type", "type", None),
    ("principalId", "principalid", None),
    ("arn", "arn", None),
    ("accountId", "accountid", None),
    ("accessKeyId", "accesskeyid", None),
    ("userName", "username", None),
    ("sessionContext", "sessioncontext", [
        ("attributes", "attributes", [
            ("creationDate", "creationdate", "timestamp"),
            ("mfaAuthenticated", "mfaauthenticated", None),
        ]),
        ("sessionIssuer", "sessionissuer", [
            ("type", "type", None),
            ("principalId", "principalid", None),
            ("arn", "arn", None),
            ("accountId", "accountid", None),
            ("userName", "username", None),
        ]),
        ("webIdFederationData", "webidfederationdata", [
            ("federatedProvider", "federatedprovider", None),
            ("attributes", "attributes", "map"),
        ]),
        ("sourceIdentity", "sourceidentity", None),
        ("ec2RoleDelivery", "ec2roledelivery", None),
        ("ec2IssuedInVPC", "ec2issuedinvpc", None),
        ("assumedRoot", "assumedroot", None),
    ]),
    ("onBehalfOf", "onbehalfof", [
        ("userId", "userid", None),
        ("identityStoreArn", "identitystorearn", None),
    ]),
    ("inScopeOf", "inscopeof", [
        ("sourceArn", "sourcearn", None),
        ("sourceAccount", "sourceaccount", None),
        ("issuerType", "issuertype", None),
        ("credentialsIssuedTo", "credentiaisissuedto", None),
    ]),
    ("invokedBy", "invokedby", None),
    ("identityProvider", "identityprovider", None),
    ("credentialId", "credentialid", None),
]

TLS_FIELDS = [("tlsVersion", "tlsversion"), ("cipherSuite", "ciphersuite"),
              ("clientProvidedHostHeader", "clientprovidedhostheader"), ("keyExchange", "keyexchange")]
RESOURCE_FIELDS = [("accountId", "accountid"), ("type", "type"), ("ARN", "arn"), ("ARNPrefix", "arnprefix")]
# Some exporters write a resource's ARN as "arn": it fills a missing or null "ARN".
RESOURCE_ARN_ALIAS = "arn"
# The same as nested specs (see USERIDENTITY_FIELDS), for the converters; resources are read with the alias.
TLS_SPEC: list = [(k, c, None) for k, c in TLS_FIELDS]
RESOURCE_READ_SPEC: list = [(k, c, None) for k, c in RESOURCE_FIELDS] + [(RESOURCE_ARN_ALIAS, "arn_alias", None)]


def _nested_type(spec) -> pa.DataType:
    if spec is None:
        return STR
    if spec == "timestamp":
        return TIMESTAMP
    if spec == "map":
        return FREEFORM
    return pa.struct([(col, _nested_type(sub)) for _, col, sub in spec])


USERIDENTITY = _nested_type(USERIDENTITY_FIELDS)
TLSDETAILS = _struct(*(c for _, c in TLS_FIELDS))
RESOURCE = _struct(*(c for _, c in RESOURCE_FIELDS))

# JSON key -> column for plain top-level string fields.
STRING_FIELDS = {
    "eventVersion": "eventversion", "eventSource": "eventsource", "eventName": "eventname",
    "awsRegion": "awsregion", "sourceIPAddress": "sourceipaddress", "userAgent": "useragent",
    "errorCode": "errorcode", "errorMessage": "errormessage", "requestID": "requestid", "eventID": "eventid",
    "eventType": "eventtype", "apiVersion": "apiversion", "recipientAccountId": "recipientaccountid",
    "sharedEventID": "sharedeventid", "annotation": "annotation", "vpcEndpointId": "vpcendpointid",
    "vpcEndpointAccountId": "vpcendpointaccountid", "eventCategory": "eventcategory",
    "sessionCredentialFromConsole": "sessioncredentialfromconsole",
}
BOOL_FIELDS = {"readOnly": "readonly", "managementEvent": "managementevent"}
FREEFORM_FIELDS = {
    "requestParameters": "requestparameters", "responseElements": "responseelements",
    "additionalEventData": "additionaleventdata", "serviceEventDetails": "serviceeventdetails",
    "addendum": "addendum", "edgeDeviceDetails": "edgedevicedetails", "insightDetails": "insightdetails",
    "eventContext": "eventcontext",
}
# Hot nested fields kept flat: column -> path inside userIdentity.
FLAT_FIELDS = {
    "useridentity_type": ("type",),
    "useridentity_principalid": ("principalId",),
    "useridentity_arn": ("arn",),
    "useridentity_accountid": ("accountId",),
    "useridentity_username": ("userName",),
    "useridentity_accesskeyid": ("accessKeyId",),
    "useridentity_invokedby": ("invokedBy",),
    "sessionissuer_arn": ("sessionContext", "sessionIssuer", "arn"),
    "sessionissuer_username": ("sessionContext", "sessionIssuer", "userName"),
    "sessionissuer_type": ("sessionContext", "sessionIssuer", "type"),
    "sessionissuer_accountid": ("sessionContext", "sessionIssuer", "accountId"),
    "sessionissuer_principalid": ("sessionContext", "sessionIssuer", "principalId"),
    "sessioncontext_mfaauthenticated": ("sessionContext", "attributes", "mfaAuthenticated"),
}

EVENT_SCHEMA = pa.schema([
    ("eventversion", STR),
    ("useridentity", USERIDENTITY),
    ("eventtime", TIMESTAMP),
    ("eventsource", STR),
    ("eventname", STR),
    ("awsregion", STR),
    ("sourceipaddress", STR),
    ("useragent", STR),
    ("errorcode", STR),
    ("errormessage", STR),
    ("requestparameters", FREEFORM),
    ("responseelements", FREEFORM),
    ("additionaleventdata", FREEFORM),
    ("requestid", STR),
    ("eventid", STR),
    ("readonly", pa.bool_()),
    ("resources", pa.list_(RESOURCE)),
    ("eventtype", STR),
    ("apiversion", STR),
    ("managementevent", pa.bool_()),
    ("recipientaccountid", STR),
    ("sharedeventid", STR),
    ("annotation", STR),
    ("vpcendpointid", STR),
    ("vpcendpointaccountid", STR),
    ("serviceeventdetails", FREEFORM),
    ("addendum", FREEFORM),
    ("edgedevicedetails", FREEFORM),
    ("insightdetails", FREEFORM),
    ("eventcategory", STR),
    ("tlsdetails", TLSDETAILS),
    ("sessioncredentialfromconsole", STR),
    ("eventcontext", FREEFORM),
    ("eventjson", STR),
    *[(name, STR) for name in FLAT_FIELDS],
])

# Columns whose per-segment statistics go into the manifest (pruning inputs).
STAT_COLUMNS = ("eventsource", "eventname", "awsregion", "recipientaccountid", "eventcategory")
