#!/usr/bin/env python3
"""Crash torture test of avenpingd (issue #4).

Runs a campaign of --jobs jobs (each with an idempotency key, as a real
client would) against the fake v2 API injecting 500s, connection resets
before and after the send, and 429s; kills the daemon with SIGKILL at random
moments, --cycles times, restarting it on the same state dir and
resubmitting whatever was not acknowledged; then lets it finish and checks,
from the fake API's send log and the daemon's answers:

  lost        acknowledged jobs never sent                       must be 0
  duplicates  extra sends of a job; allowed only for jobs in flight at a
              kill (the restarts' "N jobs were in flight" counts) or
              reset by the API after it accepted them (the client cannot
              know those left)                                   <= bound
  ids         every answer for one key names the same job        must hold
  final       every acknowledged job ends `sent`                 must hold
  order       per orderKey, jobs first reach the API in
              submission order                                   0 violations

Jobs get explicit orderKeys (50 jobs per key) and per-key order is checked
unless --no-order is given.

  tests/torture/torture.py --build build                       # 50,000 jobs, 100 kills
  tests/torture/torture.py --build build --jobs 3000 --cycles 8 --max-run 0.8  # CI size

Prints one summary line (and JSON with --json); exit status 0 when every
check holds. Standard library only; uses tests/integration/avp.py.
"""
import argparse
import bisect
import collections
import json
import os
import random
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", help="build dir (default: $AVP_BUILD_DIR or ./build)")
    p.add_argument("--jobs", type=int, default=50000)
    p.add_argument("--cycles", type=int, default=100, help="SIGKILLs")
    p.add_argument("--min-run", type=float, default=0.05, help="shortest life before a kill, s")
    p.add_argument("--max-run", type=float, default=2.0, help="longest life before a kill, s")
    p.add_argument("--rate", type=float, default=100, help="daemon rate_per_number")
    p.add_argument("--api-rate-limit", type=int, default=80, help="fake API 429 threshold/s")
    p.add_argument("--fail-rate", type=float, default=0.03, help="share of 500s")
    p.add_argument("--reset-rate", type=float, default=0.01, help="share of resets before/after")
    p.add_argument("--no-order", dest="order", action="store_false",
                   help="do not give jobs orderKeys nor check per-key order")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON too")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return p.parse_args()


def main():
    args = parse_args()
    if args.build:
        os.environ["AVP_BUILD_DIR"] = os.path.abspath(args.build)
    import avp  # after AVP_BUILD_DIR is set
    from avp import check, wait_for

    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    wd = avp.Workdir("torture")
    t_start = time.monotonic()
    try:
        summary = run(args, avp, check, wait_for, rng, wd)
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        import traceback
        print("FAIL torture (seed %d): %s: %s" % (seed, type(e).__name__, e))
        if not isinstance(e, avp.TestFailure):  # where an unexpected error came from
            traceback.print_exc(limit=-4, file=sys.stdout)
        print("work dir kept: %s" % wd.path)
        wd.kill_all()
        return 1
    wd.kill_all()
    summary["seed"] = seed
    summary["seconds"] = round(time.monotonic() - t_start, 1)
    print("PASS torture: %(jobs)d jobs, %(cycles)d kill cycles, %(acked)d acknowledged, "
          "%(lost)d lost, %(duplicates)d duplicates (bound %(dup_bound)d = %(recovered)d in flight "
          "at kills + %(resets_after)d reset after accept; %(dups_across_kills)d across a kill), "
          "order violations %(order_violations)s; faults: %(http_500)d 500s, %(http_429)d 429s, "
          "%(resets_before)d resets before; %(seconds).0fs, seed %(seed)d" % summary)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    if args.keep:
        print("work dir kept: %s" % wd.path)
    else:
        wd.cleanup()
    return 0


def job(avp, i, order_groups):
    sender = avp.SENDERS[i % len(avp.SENDERS)]
    if order_groups:
        g = i % order_groups
        j = avp.text_job(i, sender=sender, to="+1555%07d" % g, orderKey="ok-%d" % g)
    else:
        j = avp.text_job(i, sender=sender)
    j["idempotencyKey"] = "t-%d" % i
    return j


def recovered_count(text):
    n = 0
    for line in text.splitlines():
        m = re.search(r"(\d+) jobs were in flight at the last stop", line)
        if m:
            n += int(m.group(1))
    return n


def run(args, avp, check, wait_for, rng, wd):
    n = args.jobs
    api = avp.FakeAPI(wd, "--fail-rate", str(args.fail_rate), "--fail-meta-code", "131000",
                      "--reset-before", str(args.reset_rate), "--reset-after", str(args.reset_rate),
                      "--rate-limit", str(args.api_rate_limit), "--latency-ms", "2")
    # Each order key is one recipient with 50 jobs: at Meta's 6 s pair pace
    # a burst of 45 would leave the other 5 four and a half minutes behind.
    cfg = {"max_attempts": 1000, "rate_per_number": args.rate, "max_inflight": 64,
           "backoff_base_ms": 50, "backoff_max_ms": 1000, "request_timeout_ms": 10000,
           "shutdown_timeout_ms": 2000, "pair_rate_interval_ms": 20}
    order_groups = max(1, n // 50) if args.order else 0
    jobs = [job(avp, i, order_groups) for i in range(n)]
    acked = {}  # i -> job id
    restarts = []  # wall time each daemon was started
    recovered = 0
    state_dir = wd.file("state")

    def start(name):
        d = avp.Daemon(wd, api.base, cfg, state_dir=state_dir, name=name)
        restarts.append(time.time())
        return d.start()

    def absorb(answers, idx):
        for i, a in zip(idx, answers):
            if not a.get("ok"):
                raise avp.TestFailure("submit of job %d refused: %s" % (i, a))
            if i in acked:
                check(acked[i] == a["job"], "job %d acknowledged as %s and %s"
                      % (i, acked[i], a["job"]))
            acked[i] = a["job"]

    for cycle in range(args.cycles):
        d = start("c%03d" % cycle)
        idx = [i for i in range(n) if i not in acked]
        got = []

        def submit(idx=idx, got=got, d=d):
            try:
                cl = d.client()
            except OSError:
                return
            got.extend(cl.pipeline([jobs[i] for i in idx], window=2000))
            cl.close()

        t = threading.Thread(target=submit)
        t.start()
        time.sleep(rng.uniform(args.min_run, args.max_run))  # the random moment of the kill
        d.kill9()
        t.join(60)
        check(not t.is_alive(), "submitter ended with the daemon")
        absorb(got, idx)
        recovered += recovered_count(d.stderr())

    # The last life: resubmit what is left, let everything finish.
    d = start("final")
    recovered += recovered_count(d.stderr())
    cl = d.client()
    idx = [i for i in range(n) if i not in acked]
    absorb(cl.pipeline([jobs[i] for i in idx], window=2000), idx)
    check(len(acked) == n, "every job acknowledged in the end (%d/%d)" % (len(acked), n))

    def all_final():
        s = cl.stats()
        c = s["counts"]
        return s if c["queued"] + c["retrying"] + c["sending"] == 0 else None

    st = wait_for(all_final, 60 + n / 50, "every job to reach a final state", interval=0.5)
    # The store's view: every key names its acknowledged job, now sent.
    bad = []
    for lo in range(0, n, 5000):
        ids = list(range(lo, min(n, lo + 5000)))
        answers = cl.pipeline([{"op": "get", "idempotencyKey": "t-%d" % i} for i in ids])
        for i, a in zip(ids, answers):
            if not a.get("ok") or a["job"]["id"] != acked[i] or a["job"]["state"] != "sent":
                bad.append((i, a))
    check(not bad, "%d acknowledged jobs not `sent` under their id, e.g. %s" % (len(bad), bad[:3]))
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    fstats = api.stats()
    sends = api.sends()
    api.stop()

    # The API's view.
    times = collections.defaultdict(list)
    for s in sends:
        times[avp.marker(s)].append(s["t"])
    lost = [i for i in range(n) if not times.get("job-%d" % i)]
    check(not lost, "%d acknowledged jobs never sent, e.g. %s" % (len(lost), lost[:5]))
    dups = sum(len(v) - 1 for v in times.values())
    across = 0
    for v in times.values():
        for a, b in zip(v, v[1:]):
            k = bisect.bisect_right(restarts, a)  # first restart after send a
            if k < len(restarts) and restarts[k] <= b:
                across += 1
    bound = recovered + fstats["resets_after"]
    check(dups <= bound, "duplicates (%d) within the bound (%d in flight at kills + %d reset "
          "after accept)" % (dups, recovered, fstats["resets_after"]))

    violations = "not checked"
    if args.order:
        violations = 0
        first = sorted((v[0], int(m.split("-")[1])) for m, v in times.items())
        last_of = {}
        for _, i in first:
            g = i % order_groups
            if g in last_of and last_of[g] > i:
                violations += 1
            last_of[g] = max(last_of.get(g, -1), i)
        check(violations == 0, "%d per-key order violations" % violations)

    return {"jobs": n, "cycles": args.cycles, "acked": len(acked), "lost": len(lost),
            "duplicates": dups, "dups_across_kills": across, "recovered": recovered,
            "resets_after": fstats["resets_after"], "dup_bound": bound,
            "order_violations": violations, "http_500": fstats["by_status"].get("500", 0),
            "http_429": fstats["by_status"].get("429", 0),
            "resets_before": fstats["resets_before"], "sends": len(sends),
            "final_counts": st["counts"]}


if __name__ == "__main__":
    sys.exit(main())
