#!/usr/bin/env python3
"""avenpingd benchmarks: ingest (acknowledged durable jobs/s over the socket)
and dispatch (sends/s against the fake v2 API). Prints a table with the
machine it ran on and writes the numbers as JSON (--json FILE).

Run through bench/run.sh, which builds a release tree first.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import avp  # noqa: E402

SUBMIT = os.path.join(avp.BUILD, "bench", "avp-bench-submit")


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


def submit(d, clients, jobs, window=1000, not_before=0, first=0):
    out = subprocess.run([SUBMIT, "--socket", d.socket, "--clients", str(clients), "--jobs",
                          str(jobs), "--window", str(window), "--not-before", str(not_before),
                          "--first", str(first)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["acked"] != jobs:
        raise RuntimeError("only %d of %d acknowledged: %s" % (r["acked"], jobs, out.stderr))
    return r


def bench_ingest(args, results):
    for clients in (1, 8):
        wd = avp.Workdir("bench-ingest")
        try:
            api = avp.FakeAPI(wd)
            d = avp.Daemon(wd, api.base, {"log_level": "warn"}).start()
            # Scheduled an hour ahead: measures intake alone, nothing is sent.
            r = submit(d, clients, args.jobs, not_before=time.time() + 3600)
            results.append({"name": "ingest, %d client%s" % (clients, "s" if clients > 1 else ""),
                            "jobs": args.jobs, "seconds": r["seconds"], "rate": r["rate"],
                            "unit": "acked jobs/s"})
            d.stop()
            api.stop()
        finally:
            wd.kill_all()
            wd.cleanup()


def bench_dispatch(args, results):
    wd = avp.Workdir("bench-dispatch")
    try:
        api = avp.FakeAPI(wd, "--threads", "2")
        d = avp.Daemon(wd, api.base, {"log_level": "warn", "rate_per_number": 0,
                                      "max_inflight": 256, "max_inflight_per_number": 256}).start()
        n = args.dispatch_jobs
        start_at = time.time() + 2 + n / 50000.0
        submit(d, 8, n, not_before=start_at)
        cl = d.client()
        while time.time() < start_at:
            time.sleep(0.01)
        t0 = time.time()
        while True:
            st = cl.stats()
            if st["counts"]["sent"] >= n:
                break
            time.sleep(0.05)
        secs = time.time() - t0
        results.append({"name": "dispatch to fake API (HTTP/1.1 loopback)", "jobs": n,
                        "seconds": secs, "rate": n / secs, "unit": "sends/s",
                        "commits": st.get("commits")})
        cl.close()
        d.stop()
        api.stop()
    finally:
        wd.kill_all()
        wd.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200000, help="jobs per ingest run")
    ap.add_argument("--dispatch-jobs", type=int, default=100000)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    results = []
    bench_ingest(args, results)
    bench_dispatch(args, results)
    m = machine()
    print("machine: %d cores, %s, Linux %s" % (m["cores"], m["cpu"], m["kernel"]))
    print("%-44s %10s %9s %14s" % ("benchmark", "jobs", "seconds", "rate"))
    for r in results:
        print("%-44s %10d %9.2f %10.0f %s" % (r["name"], r["jobs"], r["seconds"], r["rate"],
                                              r["unit"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "time": time.time(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
