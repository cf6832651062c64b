"""Detection quality of CloudTrail Insights (lake/insights.py), one command:

    python benchmarks/insights_quality.py [--events 1500000] [--days 35] [--seed 11] [--json out.json]

1. `lake.datagen.generate_dataset(..., anomalies=True)` writes realistic trail logs (its own labelled anomalies
   are in anomalies.json; most are on read or data events, which Insights on management events do not measure,
   so they are reported separately, each marked in or out of scope);
2. they are imported into a store, and labelled anomalies are injected on top, by cloning stored events:
   - `burst`: a write management API gets, for 5 minutes, 9x its usual rate at that hour of day in the week
     before (so 10x in all), and at least 10 extra calls per minute (10x of 0.01 calls/min is not a burst);
   - `error-spike`: an API gets, for 5 minutes, max(10, 10x its usual error rate) AccessDenied errors/minute;
   - `silence`: steady automated write APIs (2 calls/min, e.g. an agent heartbeat; generated data has none busy
     enough for a silence to be measurable) stop for 30-60 minutes, three times each; they also get 5-minute
     `burst`s of 20 calls/min (10x), where the ratio test rather than the floor decides;
3. detection runs over everything after the first 7 days + 1 hour (the baseline needs them);
4. an Insight matches a label of the same series when it overlaps [label start - 1 min, label end + 15 min);
   recall per kind = labels matched / labels; precision per kind = matching Insights / Insights of that kind
   (burst: call-rate spikes, error-spike: error-rate spikes, silence: call-rate drops); every unmatched Insight
   is false, reported per day and per 100 active APIs per week (an active API is a series, i.e. an
   (account, region, eventSource, eventName[, errorCode]) with at least one call or error that week).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

import orjson
import polars as pl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lake import insights as I  # noqa: E402
from lake.datagen import generate_dataset  # noqa: E402
from lake.importer import Importer  # noqa: E402
from lake.lake import Lake  # noqa: E402

STEADY_APIS = [("logs.amazonaws.com", "CreateLogStream"), ("ecs.amazonaws.com", "SubmitTaskStateChange"),
               ("autoscaling.amazonaws.com", "RecordLifecycleActionHeartbeat"),
               ("ssm.amazonaws.com", "PutInventory")]
MATCH_BEFORE, MATCH_AFTER = 1, 15     # minutes of slack around a label when matching Insights


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def _iso(minute: int, second: int = 0) -> str:
    return datetime.fromtimestamp(minute * 60 + second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clone(tpl: dict, minute: int, rng: random.Random, **changes) -> dict:
    r = dict(tpl)
    r["eventTime"] = _iso(minute, rng.randrange(60))
    r["eventID"] = str(uuid.UUID(int=rng.getrandbits(128)))
    r.pop("requestID", None)
    r.update(changes)
    return r


def _usual(series_counts: dict, minute: int) -> float:
    """Mean calls per minute of a series in the same hour of day over the 7 days before `minute`."""
    hour0 = minute // 60 * 60
    tot = sum(series_counts.get(hour0 - 1440 * d + k, 0) for d in range(1, 8) for k in range(60))
    return tot / (7 * 60)


def _free(taken: list, key: tuple, m: int) -> bool:
    """No other label of this series within 8 days at a time of day closer than 3 hours (it would be in the
    seasonal baseline of this one), nor within a day of it."""
    for k2, m2 in taken:
        if k2 != key:
            continue
        if abs(m - m2) < 1440:
            return False
        if abs(m - m2) < 8 * 1440 and min((m - m2) % 1440, (m2 - m) % 1440) < 180:
            return False
    return True


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_500_000)
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--accounts", type=int, default=2)
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--bursts", type=int, default=60)
    ap.add_argument("--spikes", type=int, default=40)
    ap.add_argument("--heartbeat-bursts", type=int, default=5, help="10x bursts per steady 2 calls/min API.")
    ap.add_argument("--workdir", default=None, help="Keep data here (default: a temporary directory, removed).")
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the report to this file.")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="insights-quality-")
    timings: dict[str, float] = {}
    rng = random.Random(args.seed)
    try:
        t = time.time()
        gen = generate_dataset(os.path.join(work, "ds"), events=args.events, days=args.days, accounts=args.accounts,
                               regions=args.regions, seed=args.seed, anomalies=True)
        timings["generate_s"] = round(time.time() - t, 1)
        t = time.time()
        lake = Lake(os.path.join(work, "lake"))
        st = lake.create_store("bench", retention_days=3653)
        Importer(st, [os.path.join(work, "ds")]).run()
        timings["import_s"] = round(time.time() - t, 1)
        start, end = _parse(gen["start"]), _parse(gen["end"])
        s_m = I._minute(start)
        ev0 = (s_m + I.HISTORY_MINUTES + 59) // 60 * 60          # first judged minute
        ev1 = I._minute(end)

        # ---- series, usual rates and templates from the generated events
        counts = I.minute_counts(st, start, end)
        per_series: dict[tuple, dict] = {}
        for row in counts.iter_rows(named=True):
            key = tuple(row[k] for k in I._KEYS)
            per_series.setdefault(key, {})[row["minute"]] = row["n"]
        days = args.days
        busy_calls = sorted(k for k, v in per_series.items() if k[0] == I.CALL and sum(v.values()) >= days)
        lf = st.scan().filter((pl.col("eventcategory") == "Management") & (pl.col("eventtype") == "AwsApiCall"))
        # templates are successful calls, so a cloned burst is not also an error spike
        tpl_df = (lf.group_by(["recipientaccountid", "awsregion", "eventsource", "eventname", "readonly"])
                  .agg(pl.col("eventjson").filter(pl.col("errorcode").is_null()).first(), pl.len().alias("n"))
                  .filter(pl.col("eventjson").is_not_null()).collect())
        templates = {(r[0], r[1], r[2], r[3], bool(r[4])): orjson.loads(r[5]) for r in tpl_df.iter_rows()}
        mgmt_series = sorted((r[0], r[1], r[2], r[3]) for r in tpl_df.iter_rows() if r[6] >= days)

        labels: list[dict] = []
        taken: list = []
        extra: list[dict] = []

        def place(key: tuple, length: int) -> int | None:
            for _ in range(100):
                m = rng.randrange(ev0, ev1 - length - MATCH_AFTER)
                if _free(taken, key, m):
                    taken.append((key, m))
                    return m
            return None

        # ---- bursts: 10x the usual rate at that hour (at least 10 extra calls/min) for 5 minutes
        for i in range(args.bursts):
            key = busy_calls[i % len(busy_calls)]
            if (key[1], key[2], key[3], key[4], False) not in templates:
                continue
            m = place(key, 5)
            if m is None:
                continue
            usual = _usual(per_series[key], m)
            per_min = max(10, round(9 * usual))
            tpl = templates.get((key[1], key[2], key[3], key[4], False))
            if tpl is None:
                continue
            for k in range(5):
                extra += [_clone(tpl, m + k, rng) for _ in range(per_min)]
            labels.append({"kind": "burst", "series": (I.CALL,) + key[1:5] + (None,), "start": m, "end": m + 5,
                           "usual_per_min": usual, "extra_per_min": per_min})
        # ---- error spikes: max(10, 10x the usual error rate) AccessDenied per minute for 5 minutes
        for i in range(args.spikes):
            acct, region, source, name = mgmt_series[rng.randrange(len(mgmt_series))]
            key = (I.ERROR, acct, region, source, name, "AccessDenied")
            m = place(key, 5)
            if m is None:
                continue
            usual = _usual(per_series.get(key, {}), m)
            per_min = max(10, round(10 * usual))
            tpl = templates.get((acct, region, source, name, True)) or templates[(acct, region, source, name, False)]
            tpl = {k: v for k, v in tpl.items() if k != "responseElements"}
            for k in range(5):
                extra += [_clone(tpl, m + k, rng, errorCode="AccessDenied",
                                 errorMessage=f"User is not authorized to perform: {name}") for _ in range(per_min)]
            labels.append({"kind": "error-spike", "series": key, "start": m, "end": m + 5, "usual_per_min": usual,
                           "extra_per_min": per_min})
        # ---- steady heartbeats (2/min, Poisson) with three 30-60 minute silences each
        ars = sorted({(k[1], k[2]) for k in busy_calls})
        any_write = next(v for k, v in templates.items() if not k[4])
        for j, (source, name) in enumerate(STEADY_APIS):
            acct, region = ars[j % len(ars)]
            key = (I.CALL, acct, region, source, name, None)
            gaps = []
            for _ in range(3):
                length = rng.randrange(30, 61)
                m = place(key, length)
                if m is not None:
                    gaps.append((m, m + length))
                    labels.append({"kind": "silence", "series": key, "start": m, "end": m + length,
                                   "usual_per_min": 2.0})
            bursts = {}
            for _ in range(args.heartbeat_bursts):      # 10x bursts on a busy series: 18 extra calls/min
                m = place(key, 5)
                if m is not None:
                    bursts.update({m + k: 18 for k in range(5)})
                    labels.append({"kind": "burst", "series": key, "start": m, "end": m + 5, "usual_per_min": 2.0,
                                   "extra_per_min": 18})
            tpl = dict(any_write, eventSource=source, eventName=name, recipientAccountId=acct, awsRegion=region,
                       requestParameters=None, responseElements=None, userAgent="heartbeat-agent/1.0")
            tpl["userIdentity"] = {**(tpl.get("userIdentity") or {}), "accountId": acct}
            for minute in range(s_m, ev1):
                if any(a <= minute < b for a, b in gaps):
                    continue
                k = (rng.random() < 0.5) + (rng.random() < 0.5) + (rng.random() < 0.5) + (rng.random() < 0.5)
                extra += [_clone(tpl, minute, rng) for _ in range(k + bursts.get(minute, 0))]
        t = time.time()
        for i in range(0, len(extra), 200_000):
            st.append(extra[i:i + 200_000], source="import")
        timings["inject_s"] = round(time.time() - t, 1)
        injected = len(extra)
        del extra

        # ---- datagen's own labels
        for a in gen.get("anomalies", []):
            kind = I.CALL if a["type"] == "call-rate-burst" else I.ERROR
            key = (kind, a["account"], a["region"], a["eventSource"], a["eventName"],
                   a.get("errorCode") if kind == I.ERROR else None)
            ro = templates.get((a["account"], a["region"], a["eventSource"], a["eventName"], True))
            in_scope = a["eventCategory"] == "Management" and (kind == I.ERROR or ro is None)
            s0, s1 = I._minute(_parse(a["start"])), I._minute(_parse(a["end"]))
            labels.append({"kind": "datagen-" + a["type"], "series": key, "start": s0, "end": s1,
                           "in_scope": in_scope and s0 >= ev0, "id": a["id"]})

        # ---- detection
        t = time.time()
        found, series = I.find(st, datetime.fromtimestamp(ev0 * 60, timezone.utc), end, attributions=False)
        timings["detect_s"] = round(time.time() - t, 1)

        # ---- matching
        def series_of(ins: I.Insight) -> tuple:
            return (ins.kind, ins.account, ins.region, ins.source, ins.name, ins.errorcode)

        def kind_of(ins: I.Insight) -> str:
            return "error-spike" if ins.kind == I.ERROR else ("silence" if ins.direction == "drop" else "burst")

        matched_labels: set[int] = set()
        tp: dict[str, int] = {}
        fp: dict[str, int] = {}
        false_list = []
        for ins in found:
            # failed calls are calls too: an error spike on a write API is also a call-rate spike
            hit = [i for i, lab in enumerate(labels)
                   if (lab["series"] == series_of(ins) or (ins.kind == I.CALL and lab["kind"] == "error-spike"
                                                          and lab["series"][1:5] == series_of(ins)[1:5]))
                   and ins.start < lab["end"] + MATCH_AFTER and ins.end > lab["start"] - MATCH_BEFORE]
            if hit:
                matched_labels.update(hit)
                tp[kind_of(ins)] = tp.get(kind_of(ins), 0) + 1
            else:
                fp[kind_of(ins)] = fp.get(kind_of(ins), 0) + 1
                false_list.append({"series": list(series_of(ins)), "start": _iso(ins.start),
                                   "minutes": ins.duration, "direction": ins.direction,
                                   "baseline": round(ins.baseline_average, 4),
                                   "insight": round(ins.insight_average, 2)})
        by_kind = {}
        for kind in ("burst", "error-spike", "silence"):
            labs = [i for i, lab in enumerate(labels) if lab["kind"] == kind]
            got = sum(1 for i in labs if i in matched_labels)
            n_ins = tp.get(kind, 0) + fp.get(kind, 0)
            by_kind[kind] = {"labels": len(labs), "detected": got,
                             "recall": round(got / len(labs), 4) if labs else None,
                             "insights": n_ins, "precision": round(tp.get(kind, 0) / n_ins, 4) if n_ins else None}
        datagen = [{"id": lab["id"], "kind": lab["kind"], "series": list(lab["series"]), "in_scope": lab["in_scope"],
                    "detected": i in matched_labels} for i, lab in enumerate(labels) if lab["kind"].startswith("datagen")]

        # ---- false Insights per day and per 100 active APIs per week
        after = I.minute_counts(st, datetime.fromtimestamp(ev0 * 60, timezone.utc), end)
        weeks = (ev1 - ev0) / 10080
        series_weeks = after.with_columns(((pl.col("minute") - ev0) // 10080).alias("w")).select(
            I._KEYS + ["w"]).unique().height
        n_false = len(false_list)
        report = {
            "command": "python benchmarks/insights_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "events_generated": gen["events"], "events_injected": injected, "days": days,
            "judged_from": _iso(ev0), "judged_to": _iso(ev1), "judged_days": round((ev1 - ev0) / 1440, 2),
            "series_seen": series, "active_series_weeks": series_weeks,
            "insights": len(found), "by_kind": by_kind, "false_insights": n_false,
            "false_per_day": round(n_false / ((ev1 - ev0) / 1440), 4),
            "false_per_100_apis_per_week": round(100 * n_false / max(series_weeks, 1), 4),
            "avg_active_apis_per_week": round(series_weeks / weeks, 1),
            "datagen_labels": datagen, "false_examples": false_list[:10], "params": I.Params().__dict__,
            "timings": timings,
        }
        return report
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    rep = main()
    text = json.dumps(rep, indent=2, default=str)
    print(text)
    ns = argparse.ArgumentParser(add_help=False)
    ns.add_argument("--json", dest="json_out", default=None)
    out = ns.parse_known_args()[0].json_out
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
