#!/usr/bin/env python3
"""The demo behind scripts/demo.sh: the fake v2 API, avenpingd, and a small
campaign submitted and followed with avenpingctl, as an operator would.

Options: --rows N (default 1500), --senders N (default 5), --fail-rate P
(default 0.05: that share of sends is answered 500 and retried).
"""
import argparse
import collections
import csv
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import avp  # noqa: E402

CTL = os.path.join(avp.BUILD, "ctl", "avenpingctl")


def ctl(d, *args, check=True):
    p = subprocess.run([CTL, "--socket", d.socket] + list(args), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit("avenpingctl %s failed (%d): %s" % (args[0], p.returncode, p.stderr))
    return p


def say(title, text=""):
    print("%-13s %s" % (title, text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--senders", type=int, default=5)
    ap.add_argument("--fail-rate", type=float, default=0.05)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    senders = ["10000%02d" % (i + 1) for i in range(args.senders)]

    wd = avp.Workdir("demo")
    try:
        api = avp.FakeAPI(wd, "--fail-rate", str(args.fail_rate), "--latency-ms", "5",
                          "--phone-numbers", ",".join(senders))
        say("fake v2 API", "%s (answers %.0f%% of sends with a 500 + Meta 131000)"
            % (api.base, args.fail_rate * 100))
        d = avp.Daemon(wd, api.base, {"rate_per_number": 200, "backoff_base_ms": 50,
                                      "backoff_max_ms": 2000}).start()
        say("avenpingd", "socket %s, state %s, 200 sends/s per sender" % (d.socket, d.state_dir))

        # A customer list, as a business would export it.
        customers = wd.file("customers.csv")
        with open(customers, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["first_name", "phone", "phoneNumberId", "code"])
            for i in range(args.rows):
                w.writerow(["Customer%d" % i, "+1 555 %07d" % i, senders[i % len(senders)],
                            "SPRING%04d" % i])
        third = args.rows // 3
        welcome = wd.file("welcome.csv")
        with open(customers) as src, open(welcome, "w") as dst:
            lines = src.readlines()
            dst.writelines(lines[:1 + third])

        say("import", "welcome.csv (%d rows, text) and customers.csv (%d rows, template)"
            % (third, args.rows))
        t0 = time.monotonic()
        ctl(d, "import", welcome, "--campaign", "welcome", "--from-column", "phoneNumberId",
            "--to-column", "phone", "--text", "Hi {first_name}, welcome!", "--quiet")
        ctl(d, "import", customers, "--campaign", "spring", "--from-column", "phoneNumberId",
            "--to-column", "phone", "--template", "spring_promo", "--language", "en_US",
            "--param", "first_name", "--param", "code", "--quiet")
        say("", "acknowledged (durable) in %.2fs" % (time.monotonic() - t0))

        p = ctl(d, "campaign", "spring", "--follow", "--interval", "0.5")
        for line in p.stdout.strip().splitlines()[-3:]:
            say("progress", line)
        wait = avp.wait_for(lambda: (lambda s: s if sum(
            s["counts"][k] for k in ("queued", "retrying", "sending")) == 0 else None)(
                d.client().stats()), 120, "every job final")
        t_all = time.monotonic() - t0

        again = ctl(d, "--json", "import", customers, "--campaign", "spring", "--from-column",
                    "phoneNumberId", "--to-column", "phone", "--template", "spring_promo",
                    "--param", "first_name", "--param", "code", "--quiet")
        say("re-import", "customers.csv again: %s" % again.stdout.strip().splitlines()[-1])

        report = wd.file("spring-report.csv")
        ctl(d, "report", "--campaign", "spring", "--output", report)
        with open(report) as f:
            rows = list(csv.DictReader(f))
        sends = api.sends()
        fst = api.stats()
        rc = d.stop()
        api.stop()

        print()
        print("Summary")
        say("  jobs", "%d acknowledged; final states: %s" % (
            sum(wait["counts"].values()),
            ", ".join("%s %d" % kv for kv in sorted(wait["counts"].items()) if kv[1])))
        say("  API saw", "%d sends accepted in %.2fs, %d answered 500 and retried" % (
            len(sends), t_all, fst["by_status"].get("500", 0)))
        dup = sum(n - 1 for n in collections.Counter(
            (s["route"], s["to"]) for s in sends).values())
        say("  duplicates", "%d" % dup)
        say("  per sender", ", ".join("%s: %d" % kv for kv in sorted(collections.Counter(
            s["phoneNumberId"] for s in sends).items())))
        say("  per route", ", ".join("%s: %d" % kv for kv in sorted(collections.Counter(
            s["route"] for s in sends).items())))
        say("  report", "%d rows in %s, e.g.:" % (
            len(rows), wd.file("spring-report.csv") if args.keep
            else "spring-report.csv (removed at exit; --keep keeps the work directory)"))
        for r in rows[:3]:
            say("", "%s -> %s %s %s (attempts %s)" % (r.get("phoneNumberId"), r.get("recipient"),
                                                     r.get("state"), r.get("wamid"),
                                                     r.get("attempts")))
        say("  daemon exit", "%d" % rc)
        ok = (rc == 0 and dup == 0 and len(sends) == args.rows + third
              and all(r["state"] == "sent" for r in rows))
        print("\n%s" % ("OK: every acknowledged job was sent exactly once; the re-import "
                        "created nothing." if ok else "PROBLEM: see above"))
        return 0 if ok else 1
    finally:
        wd.kill_all()
        if not args.keep:
            wd.cleanup()


if __name__ == "__main__":
    sys.exit(main())
