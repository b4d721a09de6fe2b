#!/usr/bin/env python3
"""Instructions per send, by thread, for a dispatch under callgrind.

  bench/callgrind.py OUTDIR [JOBS] [--campaign | --ingest]

Starts nginx (the benchmarks' stub) and the daemon under
`valgrind --tool=callgrind --separate-threads=yes` with two HTTP threads,
submits JOBS jobs (default 20,000; more than 110,000 also exercises refills)
due a little later, waits until they are committed, zeroes the counters,
lets them all be sent, stops the daemon and prints each thread's
instructions per send. --campaign sends template jobs of one campaign over
10 senders, as the campaign benchmark does. --ingest counts submits
instead: after a warm-up of 2,000, JOBS jobs scheduled an hour ahead from
one client with a window of 1,000 (the ingest benchmark's first row), with
the counters zeroed before them and dumped once they are all acknowledged;
the numbers are then per submit. The per-thread files stay in OUTDIR for
callgrind_annotate.

Wall-clock runs on a shared two-core machine move by 10-20% between
minutes; instruction counts of the same work move by well under 1%, so
before/after comparisons of a change use these (docs/performance.md, items
13-15). Needs the release build in $AVP_BUILD_DIR (default build-release/),
nginx with the echo module (scripts/deps.sh --bench) and valgrind.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("jobs", nargs="?", type=int, default=20000)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--campaign", action="store_true")
    mode.add_argument("--ingest", action="store_true")
    a = ap.parse_args()
    shutil.rmtree(a.outdir, ignore_errors=True)
    os.makedirs(a.outdir)
    out = os.path.abspath(a.outdir)
    # Read by tests/integration/avp.py at import: the daemon's command prefix.
    os.environ["AVP_WRAPPER"] = ("valgrind --tool=callgrind --separate-threads=yes "
                                 "--callgrind-out-file=%s/cg.out.%%p" % out)
    os.environ.setdefault("AVP_BUILD_DIR", os.path.join(HERE, "..", "build-release"))
    sys.path.insert(0, HERE)
    import bench  # noqa: E402 - after the environment it reads

    kw = {"senders": 10, "template": 1, "campaign": "bench-campaign"} if a.campaign else {}
    r = bench.Run("callgrind")
    try:
        if a.ingest:
            d = r.start_daemon("http://127.0.0.1:9")  # nothing is sent: due in an hour
            bench.submit(d, 2000, clients=1, not_before=time.time() + 3600)
            subprocess.run(["callgrind_control", "-z", str(d.proc.pid)], capture_output=True,
                           check=False)
            bench.submit(d, a.jobs, clients=1, window=1000, not_before=time.time() + 3600,
                         first=1000000)
            # Dumped now: the daemon's stop (its drain and close) is not ingest.
            subprocess.run(["callgrind_control", "-d", str(d.proc.pid)], capture_output=True,
                           check=False)
            return report(out, a.jobs, "per submit", ".1-")
        s = r.start_stub()
        d = r.start_daemon(s.base, bench.THREADS)
        cl = d.client()
        bench.submit(d, a.jobs, clients=4, not_before=time.time() + 3 + a.jobs / 5000.0, **kw)
        bench.avp.wait_for(lambda: cl.stats()["commitBacklog"] == 0, 120, "the last commit")
        subprocess.run(["callgrind_control", "-z", str(d.proc.pid)], capture_output=True,
                       check=False)
        # Rarely: under callgrind a `stats` call (~260,000 instructions, mostly
        # cJSON printing numbers) every 0.2 s was a sixth of the loop's count.
        bench.wait_sent(cl, a.jobs, 600 + a.jobs / 100.0, poll=2.0)
        cl.close()
    finally:
        r.close()
    return report(out, a.jobs, "per send", "-")


def report(out, jobs, per, part):
    """Prints each thread's instructions of the profile files whose names
    have `part` before the thread number ("-": written at exit; ".1-": the
    first dump)."""
    print("%-24s %16s %14s" % ("thread (file)", "instructions", per))
    for f in sorted(glob.glob(os.path.join(out, "cg.out.*-*"))):
        name = os.path.basename(f)
        if not re.search(r"^cg\.out\.\d+%s\d+$" % re.escape(part), name):
            continue
        with open(f, errors="replace") as fh:
            m = re.search(r"^(?:summary|totals): (\d+)", fh.read(), re.M)
        if m:
            n = int(m.group(1))
            print("%-24s %16d %14.0f" % (name, n, n / jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
