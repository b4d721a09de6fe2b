#!/usr/bin/env python3
"""The demo behind scripts/demo.sh: fake API + avenpingd + a small campaign.

Options: --jobs N (default 1000), --senders N (default 5), --fail-rate P
(default 0.05: that share of sends is answered 500 and retried).
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import avp  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=5)
    ap.add_argument("--fail-rate", type=float, default=0.05)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    senders = ["10000%02d" % (i + 1) for i in range(args.senders)]

    wd = avp.Workdir("demo")
    try:
        api = avp.FakeAPI(wd, "--fail-rate", str(args.fail_rate), "--latency-ms", "5",
                          "--phone-numbers", ",".join(senders))
        print("fake v2 API   listening on %s (fails %.0f%% of sends with a 500)"
              % (api.base, args.fail_rate * 100))
        d = avp.Daemon(wd, api.base, {"rate_per_number": 200, "backoff_base_ms": 50,
                                      "backoff_max_ms": 2000}).start()
        print("avenpingd     socket %s, state %s" % (d.socket, d.state_dir))

        jobs = []
        for i in range(args.jobs):
            s = senders[i % len(senders)]
            j = (avp.text_job(i, sender=s) if i % 3 == 0 else avp.template_job(i, sender=s))
            j["campaign"] = "demo"
            j["idempotencyKey"] = "demo-%d" % i
            jobs.append(j)
        cl = d.client()
        t0 = time.monotonic()
        answers = cl.pipeline(jobs)
        t_ack = time.monotonic() - t0
        acked = sum(1 for a in answers if a.get("ok"))
        print("submitted     %d jobs, %d acknowledged durable in %.2fs" % (len(jobs), acked, t_ack))

        last = None
        while True:
            st = cl.stats()
            c = st["counts"]
            left = c["queued"] + c["retrying"] + c["sending"]
            line = "progress      sent %d, failed %d, waiting %d" % (c["sent"], c["failed"], left)
            if line != last:
                print(line)
                last = line
            if left == 0:
                break
            time.sleep(0.5)
        t_all = time.monotonic() - t0
        sends = api.sends()
        fst = api.stats()
        cl.close()
        rc = d.stop()
        api.stop()

        print()
        print("Summary (from the fake API's log)")
        print("  jobs acknowledged        %d" % acked)
        print("  final states             %s" % ", ".join(
            "%s %d" % (k, v) for k, v in sorted(c.items()) if v))
        print("  sends accepted by API    %d in %.2fs (%.0f/s)" % (len(sends), t_all,
                                                               len(sends) / max(t_all, 1e-9)))
        print("  500 answers retried      %d" % fst["by_status"].get("500", 0))
        dup = sum(n - 1 for n in collections.Counter(avp.marker(s) for s in sends).values())
        print("  duplicates               %d" % dup)
        print("  per sender               %s" % ", ".join(
            "%s: %d" % kv for kv in sorted(collections.Counter(
                s["phoneNumberId"] for s in sends).items())))
        print("  per route                %s" % ", ".join(
            "%s: %d" % kv for kv in sorted(collections.Counter(s["route"] for s in sends).items())))
        if sends:
            s = sends[0]
            print("  first send               %s -> %s via %s, wamid %s"
                  % (s["phoneNumberId"], s["to"], s["route"], s["wamid"]))
        print("  daemon exit status       %d" % rc)
        ok = rc == 0 and len(sends) == acked and dup == 0
        print("\n%s" % ("OK: every acknowledged job was sent exactly once." if ok else "PROBLEM"))
        return 0 if ok else 1
    finally:
        wd.kill_all()
        if not args.keep:
            wd.cleanup()


if __name__ == "__main__":
    sys.exit(main())
