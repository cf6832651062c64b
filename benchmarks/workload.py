"""The fixed query workload of the Lake vs DuckDB comparison (`python -m benchmarks.compare`).

Each query is a CloudTrail Lake investigation written in CloudTrail Lake's SQL (Trino's dialect), with
placeholders filled in per data set by `Params`: `{store}` (the main store), `{store2}` (the second, smaller
store of the join), and times / ids picked from the data itself, deterministically, so a data set always gets
the same workload. Every query orders its output completely (or aggregates to rows whose order does not
matter), so Lake and DuckDB must return the same rows and the runner can compare them by a checksum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone


@dataclass(frozen=True)
class Query:
    """One workload query: `scale` marks those also timed at every `--scale-points` size (their cost should
    not grow with the store: they read one hour, or one event)."""

    name: str
    measures: str
    sql: str
    scale: bool = False

    def bind(self, params: "Params") -> str:
        return self.sql.format(**params.values())


@dataclass(frozen=True)
class Params:
    """The values a data set gives the workload's placeholders."""

    store: str
    store2: str
    week_start: datetime   # the last 7 days of the data set (all of it when it is shorter)
    week_end: datetime
    day_start: datetime    # the day holding the data set's midpoint
    hour_start: datetime   # the hour holding the data set's midpoint
    event_id: str          # the first event (by time, then id) of that hour

    def values(self) -> dict[str, str]:
        ts = "%Y-%m-%d %H:%M:%S"
        return {"store": self.store, "store2": self.store2, "week_start": self.week_start.strftime(ts),
                "week_end": self.week_end.strftime(ts), "day_start": self.day_start.strftime(ts),
                "day_end": (self.day_start + timedelta(days=1)).strftime(ts),
                "hour_start": self.hour_start.strftime(ts),
                "hour_end": (self.hour_start + timedelta(hours=1)).strftime(ts), "event_id": self.event_id}


def time_params(first: datetime, last: datetime) -> tuple[datetime, datetime, datetime, datetime]:
    """(week_start, week_end, day_start, hour_start) for events spanning [first, last], as naive UTC: the
    windows depend only on the span, so data sets generated with the same days and end share them."""
    def naive(t: datetime) -> datetime:
        return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
    first, last = naive(first), naive(last)
    week_end = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    week_start = max(week_end - timedelta(days=7), first.replace(hour=0, minute=0, second=0, microsecond=0))
    mid = first + (last - first) / 2
    return week_start, week_end, mid.replace(hour=0, minute=0, second=0, microsecond=0), \
        mid.replace(minute=0, second=0, microsecond=0)


# The point lookup's event: the first event of the one-hour window (ties broken by eventID). Asked of DuckDB
# at setup, so the id exists in the data set; `{hour_start}` / `{hour_end}` as in the workload.
EVENT_ID_SQL = ("SELECT eventid FROM {store} WHERE eventtime >= TIMESTAMP '{hour_start}' "
                "AND eventtime < TIMESTAMP '{hour_end}' ORDER BY eventtime, eventid LIMIT 1")


QUERIES: list[Query] = [
    Query("top_apis_last_week", "time-bounded top-N: the busiest APIs of the last 7 days", """
        SELECT eventsource, eventname, count(*) AS calls
        FROM {store}
        WHERE eventtime >= TIMESTAMP '{week_start}' AND eventtime < TIMESTAMP '{week_end}'
        GROUP BY eventsource, eventname
        ORDER BY calls DESC, eventsource, eventname
        LIMIT 10"""),
    Query("errors_by_principal", "errors by principal: who fails most, and with which error", """
        SELECT useridentity.arn AS principal, errorcode, count(*) AS errors, min(eventtime) AS first_seen,
               max(eventtime) AS last_seen
        FROM {store}
        WHERE errorcode IS NOT NULL
        GROUP BY useridentity.arn, errorcode
        ORDER BY errors DESC, principal NULLS LAST, errorcode
        LIMIT 25"""),
    Query("denied_roles_without_mfa", "nested userIdentity filters: denied calls of assumed roles without MFA",
          """
        SELECT useridentity.sessioncontext.sessionissuer.username AS role, useridentity.accountid AS account,
               eventsource, count(*) AS denied
        FROM {store}
        WHERE useridentity.type = 'AssumedRole'
          AND useridentity.sessioncontext.attributes.mfaauthenticated = 'false'
          AND errorcode IN ('AccessDenied', 'AccessDeniedException', 'Client.UnauthorizedOperation')
        GROUP BY 1, 2, 3
        ORDER BY denied DESC, role, account, eventsource"""),
    Query("s3_buckets_by_caller", "requestParameters key extraction: S3 calls per bucket and principal", """
        SELECT element_at(requestparameters, 'bucketName') AS bucket, useridentity.arn AS principal,
               count(*) AS calls, count_if(eventname IN ('PutObject', 'DeleteObject')) AS writes
        FROM {store}
        WHERE eventsource = 's3.amazonaws.com' AND element_at(requestparameters, 'bucketName') IS NOT NULL
        GROUP BY 1, 2
        ORDER BY calls DESC, bucket, principal NULLS LAST
        LIMIT 20"""),
    Query("console_logins", "map values in filters and output: console sign-ins by outcome and MFA", """
        SELECT useridentity.arn AS principal, element_at(responseelements, 'ConsoleLogin') AS outcome,
               element_at(additionaleventdata, 'MFAUsed') AS mfa, count(*) AS logins,
               count(DISTINCT sourceipaddress) AS ips
        FROM {store}
        WHERE eventname = 'ConsoleLogin'
        GROUP BY 1, 2, 3
        ORDER BY logins DESC, principal NULLS LAST, outcome NULLS LAST, mfa NULLS LAST"""),
    Query("resources_touched", "UNNEST of resources: which resources were touched, and by how many principals",
          """
        SELECT r.type AS resource_type, r.arn AS resource, count(*) AS events,
               count(DISTINCT useridentity.arn) AS principals
        FROM {store} CROSS JOIN UNNEST(resources) AS t(r)
        WHERE r.arn IS NOT NULL
        GROUP BY 1, 2
        ORDER BY events DESC, resource_type, resource
        LIMIT 20"""),
    Query("top_apis_per_principal", "window ranking: each principal's three most used APIs", """
        SELECT principal, eventname, calls, rnk
        FROM (
          SELECT useridentity.arn AS principal, eventname, count(*) AS calls,
                 row_number() OVER (PARTITION BY useridentity.arn ORDER BY count(*) DESC, eventname) AS rnk
          FROM {store}
          WHERE useridentity.arn IS NOT NULL
          GROUP BY useridentity.arn, eventname
        )
        WHERE rnk <= 3
        ORDER BY principal, rnk"""),
    Query("distinct_per_account", "distinct counts: breadth of activity per account", """
        SELECT recipientaccountid, count(DISTINCT eventname) AS apis, count(DISTINCT eventsource) AS services,
               count(DISTINCT useridentity.arn) AS principals, count(DISTINCT sourceipaddress) AS ips,
               count(*) AS events
        FROM {store}
        GROUP BY recipientaccountid
        ORDER BY recipientaccountid"""),
    Query("one_hour_count", "one-hour window: how many events in an hour", """
        SELECT count(*) AS events
        FROM {store}
        WHERE eventtime >= TIMESTAMP '{hour_start}' AND eventtime < TIMESTAMP '{hour_end}'""", scale=True),
    Query("one_hour_by_principal", "one-hour window: who did what in that hour", """
        SELECT useridentity.arn AS principal, eventname, count(*) AS calls
        FROM {store}
        WHERE eventtime >= TIMESTAMP '{hour_start}' AND eventtime < TIMESTAMP '{hour_end}'
        GROUP BY 1, 2
        ORDER BY calls DESC, principal NULLS LAST, eventname
        LIMIT 20"""),
    Query("event_by_id", "point lookup by eventID", """
        SELECT eventid, eventtime, eventsource, eventname, useridentity.arn AS principal, sourceipaddress,
               recipientaccountid, awsregion
        FROM {store}
        WHERE eventid = '{event_id}'""", scale=True),
    Query("account_region_summary", "group by account and region, with error and read-only shares", """
        SELECT recipientaccountid, awsregion, count(*) AS events,
               count_if(errorcode IS NOT NULL) AS errors, count_if(readonly) AS reads,
               count(DISTINCT eventcategory) AS categories
        FROM {store}
        GROUP BY recipientaccountid, awsregion
        ORDER BY recipientaccountid, awsregion"""),
    Query("hourly_errors_one_day", "time-bounded timeline: errors per hour over one day", """
        SELECT date_trunc('hour', eventtime) AS hour, count(*) AS events,
               count_if(errorcode IS NOT NULL) AS errors, count(DISTINCT useridentity.arn) AS principals
        FROM {store}
        WHERE eventtime >= TIMESTAMP '{day_start}' AND eventtime < TIMESTAMP '{day_end}'
        GROUP BY 1
        ORDER BY 1"""),
    Query("outdated_tls", "struct field filter: callers still on TLS 1.2 or older", """
        SELECT useridentity.arn AS principal, tlsdetails.tlsversion AS tls, eventsource, count(*) AS calls
        FROM {store}
        WHERE tlsdetails.tlsversion IN ('TLSv1', 'TLSv1.1', 'TLSv1.2')
        GROUP BY 1, 2, 3
        ORDER BY calls DESC, principal NULLS LAST, tls, eventsource
        LIMIT 20"""),
    Query("sources_in_both_stores", "join of two stores: source addresses active in both, with activity in each",
          """
        SELECT a.ip, a.calls AS calls_main, a.principals AS principals_main, b.calls AS calls_second,
               b.principals AS principals_second
        FROM (SELECT sourceipaddress AS ip, count(*) AS calls, count(DISTINCT useridentity.arn) AS principals
              FROM {store} GROUP BY 1) a
        JOIN (SELECT sourceipaddress AS ip, count(*) AS calls, count(DISTINCT useridentity.arn) AS principals
              FROM {store2} GROUP BY 1) b ON a.ip = b.ip
        ORDER BY calls_main DESC, a.ip"""),
]
