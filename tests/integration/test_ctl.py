#!/usr/bin/env python3
"""avenpingctl as an operator uses it, against real processes.

Each case starts the fake v2 API and avenpingd, drives avenpingctl as a
subprocess and judges from the fake API's send log and avenpingctl's own
output. Usage: test_ctl.py CASE   (see CASES at the bottom)
"""
import collections
import csv
import json
import os
import re
import signal
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import avp  # noqa: E402
from avp import check, unfinished, wait_all_final, wait_for  # noqa: E402

CTL = os.environ.get("AVP_CTL", os.path.join(avp.BUILD, "ctl", "avenpingctl"))
WATCHED = 1500  # events the campaign watcher reads (ctl_campaign)


def ctl(d, *args, timeout=120, stdin=None):
    """Runs avenpingctl against daemon d; returns the CompletedProcess."""
    return subprocess.run([CTL, "--socket", d.socket] + list(args), capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def ctl_json(d, *args):
    p = ctl(d, "--json", *args)
    check(p.returncode == 0, "avenpingctl %s: exit %d: %s" % (args, p.returncode, p.stderr))
    return json.loads(p.stdout)


def campaign(d, name):
    return ctl_json(d, "campaign", name)["campaign"]


def write_csv(path, n, senders):
    """n rows: recipient, sender, and a row marker that the message text
    carries (so the fake API's log says which row each send was)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["to", "phoneNumberId", "row", "note"])
        for i in range(1, n + 1):
            # A comma and a quote in a field: the CSV must be parsed, not split.
            w.writerow(["+1555%07d" % i, senders[i % len(senders)], i, 'a, "quoted" note'])


def fnv1a_128(data):
    h = 0x6c62272e07bb014262b821756295c58d
    prime = (1 << 88) | 0x13b
    for byte in data:
        h = ((h ^ byte) * prime) & ((1 << 128) - 1)
    return h


def content_key(campaign, fields):
    """The idempotency key avenpingctl derives for a CSV row (row_content_key
    in ctl/avenpingctl.c): FNV-1a 128 over each field's length (8 bytes,
    little-endian) and bytes, in hex, after the campaign."""
    data = b"".join(len(f.encode()).to_bytes(8, "little") + f.encode() for f in fields)
    return "%s:%032x" % (campaign, fnv1a_128(data))


def line_key(campaign, obj):
    """The key derived for a JSON Lines line written as json.dumps(obj):
    the hash of the line without its blanks outside strings."""
    return "%s:%032x" % (campaign, fnv1a_128(json.dumps(obj, separators=(",", ":")).encode()))


def row_of(send):
    m = re.fullmatch(r"row-(\d+)", send["body"]["text"])
    check(m is not None, "unexpected text in the API log: %r" % send["body"]["text"])
    return int(m.group(1))


def ctl_campaign(wd):
    """Import a 20,000-row CSV, watch it, pause/resume, cancel the rest,
    retry the failed, export the report and check it row by row against
    the fake API's log; a re-run of the import creates nothing."""
    n, name = 20000, "spring-sale"
    failing = list(range(25, 2001, 50))  # 40 rows the API refuses (400) at first
    api = avp.FakeAPI(wd)
    api.control(rules=[{"to": "1555%07d" % i, "status": 400, "error": "VALIDATION_ERROR",
                        "message": "refused by the test"} for i in failing])
    # 5 senders x 100/s: the campaign takes ~40 s to send, so there is time
    # to watch, pause and cancel most of it.
    d = avp.Daemon(wd, api.base, config={"rate_per_number": 100}).start()
    path = wd.file("campaign.csv")
    write_csv(path, n, avp.SENDERS)

    t0 = time.monotonic()
    p = ctl(d, "--json", "import", path, "--campaign", name, "--text", "row-{row}")
    check(p.returncode == 0, "import exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    summary = json.loads(p.stdout)
    check(summary["created"] == n and summary["duplicates"] == 0 and summary["failed"] == 0,
          "import summary %s" % summary)
    check("progress:" in p.stderr and "%d/%d rows (100%%)" % (n, n) in p.stderr,
          "plain progress lines when stderr is not a terminal: %r" % p.stderr[-300:])
    print("import: %d rows in %.1fs" % (n, time.monotonic() - t0))

    # A watcher of this campaign (plus the stats connection that looks).
    # 1,500 events (about 1.5 s of this campaign): under a sanitizer the
    # `sending` records of a whole burst (~500) can come before its first
    # `sent`, so a few hundred events need not hold a `sent` one.
    watch = subprocess.Popen([CTL, "--socket", d.socket, "--json", "watch", "--campaign", name,
                              "--count", str(WATCHED)], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: ctl_json(d, "stats")["stats"]["connections"] >= 2, 10, "the watcher")

    # Progress is visible: the done count grows while the campaign runs.
    c1 = campaign(d, name)
    check(c1["total"] == n, "campaign total %s" % c1)
    wait_for(lambda: n - unfinished(campaign(d, name)) > n - unfinished(c1) + 100, 30,
             "the campaign's progress")
    out, _ = watch.communicate(timeout=60)
    check(watch.returncode == 0, "watch exit %d" % watch.returncode)
    events = [json.loads(line) for line in out.splitlines()]
    check(len(events) == WATCHED, "%d watch events, got %d" % (WATCHED, len(events)))
    jobs_ev = [e for e in events if e["event"] == "job"]
    check(all(e["event"] in ("job", "gap") for e in events), "job events and gap markers only")
    check(len(jobs_ev) > WATCHED // 2 and all(e["campaign"] == name for e in jobs_ev),
          "job events of the campaign: %s" % events[:2])
    check({e["state"] for e in jobs_ev} <= {"sending", "sent", "failed", "retrying"},
          "event states %s" % {e["state"] for e in jobs_ev})
    check(any(e["state"] == "sent" and e["wamid"] for e in jobs_ev), "sent events carry a wamid")

    # Pause and resume: nothing of the campaign is sent while it is paused.
    p = ctl(d, "pause", "--campaign", name)
    check(p.returncode == 0, "pause exit %d: %s" % (p.returncode, p.stderr))
    wait_for(lambda: campaign(d, name)["counts"]["sending"] == 0, 30, "in-flight to drain")
    check(campaign(d, name)["paused"] is True, "campaign shows paused")
    before = len(api.sends())
    time.sleep(1.0)  # a negative check: nothing may be sent while paused
    check(len(api.sends()) == before, "no sends while paused")
    p = ctl(d, "resume", "--campaign", name)
    check(p.returncode == 0, "resume exit %d: %s" % (p.returncode, p.stderr))
    check(campaign(d, name)["paused"] is False, "campaign shows resumed")
    wait_for(lambda: len(api.sends()) > before, 30, "sending to resume")

    # Wait until every refused row has been tried (they are early in the
    # file), then cancel the rest.
    wait_for(lambda: campaign(d, name)["counts"]["failed"] == len(failing), 60,
             "the %d refused rows to fail" % len(failing))
    res = ctl_json(d, "cancel", "--campaign", name)
    check(res["cancelled"] > n // 2, "most of the campaign cancelled: %s" % res)
    c = wait_for(lambda: (lambda x: x if unfinished(x) == 0 else None)(campaign(d, name)), 60,
                 "in-flight jobs to finish after the cancel")
    # Jobs picked when the cancel came finish their attempt and end
    # cancelled (not retried) unless it succeeded: not in the answer's count.
    check(c["counts"]["cancelled"] >= res["cancelled"]
          and sum(c["counts"].values()) == n, "cancelled count %s vs %s" % (c, res))
    check(c["counts"]["sent"] + c["counts"]["failed"] + c["counts"]["cancelled"] == n,
          "every job sent, failed or cancelled: %s" % c["counts"])
    check(ctl_json(d, "cancel", "--campaign", name)["cancelled"] == 0, "a second cancel: 0")

    # The API works for those recipients now: retry the failed ones.
    api.control(rules=[])
    res = ctl_json(d, "retry", "--campaign", name, "--state", "failed")
    check(res["requeued"] == len(failing), "requeued %s" % res)
    p = ctl(d, "campaign", name, "--follow", "--interval", "0.2")
    check(p.returncode == 0, "campaign --follow exit %d: %s" % (p.returncode, p.stderr))
    last = p.stdout.strip().splitlines()[-1]
    check("%d/%d done (100.0%%)" % (n, n) in last, "follow ends at 100%%: %r" % last)
    c = campaign(d, name)
    check(c["counts"]["failed"] == 0 and unfinished(c) == 0, "after retry: %s" % c["counts"])

    # The report, row by row, against the API's log.
    report = wd.file("report.csv")
    p = ctl(d, "report", "--campaign", name, "--output", report)
    check(p.returncode == 0, "report exit %d: %s" % (p.returncode, p.stderr))
    with open(report, newline="") as f:
        rows = list(csv.DictReader(f))
    check(len(rows) == n, "report has %d rows, want %d" % (len(rows), n))
    p = ctl(d, "--json", "report", "--campaign", name, "--output", wd.file("report2.csv"))
    check(p.returncode == 0 and json.loads(p.stdout) == {"written": n},
          "--json report --output says how many: %r" % p.stdout)
    sends = api.sends()
    by_row = collections.defaultdict(list)
    for s in sends:
        by_row[row_of(s)].append(s)
    states = collections.Counter()
    seen_rows = set()
    for r in rows:
        i = int(r["recipient"][len("+1555"):])
        seen_rows.add(i)
        states[r["state"]] += 1
        sender = avp.SENDERS[i % len(avp.SENDERS)]
        check(r["idempotencyKey"] == content_key(name, [r["recipient"], sender, str(i),
                                                        'a, "quoted" note']),
              "row %d key %r" % (i, r["idempotencyKey"]))
        check(r["phoneNumberId"] == sender, "row %d sender" % i)
        logged = by_row.get(i, [])
        if r["state"] == "sent":
            check(len(logged) == 1, "row %d sent once, API saw %d" % (i, len(logged)))
            check(r["wamid"] == logged[0]["wamid"], "row %d wamid matches the API's" % i)
            check(logged[0]["phoneNumberId"] == r["phoneNumberId"], "row %d sender logged" % i)
        elif r["state"] == "cancelled":
            check(not logged and r["wamid"] == "", "cancelled row %d never reached the API" % i)
        else:
            raise avp.TestFailure("row %d in state %s" % (i, r["state"]))
        if i in failing:
            check(r["state"] == "sent" and int(r["attempts"]) == 1,
                  "refused row %d sent after the retry (attempts start over)" % i)
            # The send is the next outcome: the 400 before it is gone (a
            # report read the sent row as an error).
            check(r["errorCode"] == "", "row %d: its old error cleared by the send" % i)
    check(seen_rows == set(range(1, n + 1)), "every row in the report once")
    check(states["sent"] == len(sends), "sent rows %d == API log %d" % (states["sent"], len(sends)))
    print("report: %s" % dict(states))

    # JSON Lines report agrees.
    p = ctl(d, "report", "--campaign", name, "--format", "jsonl")
    check(p.returncode == 0, "jsonl report")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    check(len(lines) == n and collections.Counter(x["state"] for x in lines) == states,
          "jsonl report agrees with the CSV one")

    # Running the same import again creates nothing and sends nothing.
    p = ctl(d, "--json", "import", path, "--campaign", name, "--text", "row-{row}")
    check(p.returncode == 0, "re-run exit %d: %s" % (p.returncode, p.stderr[-500:]))
    again = json.loads(p.stdout)
    check(again["created"] == 0 and again["duplicates"] == n, "re-run summary %s" % again)
    check(campaign(d, name)["total"] == n, "no new jobs in the campaign")
    check(d.stop() == 0, "daemon exits 0")
    check(len(api.sends()) == len(sends), "nothing more was sent")


def parse_prometheus(text):
    """A strict reader of the text format (0.0.4): returns {family: type}
    and a list of (name, labels, value). Raises on any malformed line."""
    types, samples = {}, []
    sample_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    check(text.endswith("\n"), "the file ends with a newline")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            check(len(line.split(" ", 3)) == 4, "HELP line %r" % line)
            continue
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ")
            check(typ in ("counter", "gauge", "histogram", "summary", "untyped"), line)
            check(fam not in types, "one TYPE per family: %s" % fam)
            types[fam] = typ
            continue
        check(not line.startswith("#") and line, "unexpected line %r" % line)
        m = sample_re.match(line)
        check(m is not None, "malformed sample %r" % line)
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = label_re.match(rest, pos)
                check(lm is not None, "malformed labels in %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        value = float(m.group(4))  # raises on a bad number
        name = m.group(1)
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        check(fam in types, "sample %s has a TYPE line before it" % name)
        samples.append((name, labels, value))
    return types, samples


def ctl_metrics(wd):
    """The metrics file parses as Prometheus text format and has the
    expected series with values that match what happened."""
    api = avp.FakeAPI(wd)
    api.control(rules=[{"to": "15559999999", "status": 400, "error": "VALIDATION_ERROR"}])
    mfile = wd.file("avenpingd.prom")
    d = avp.Daemon(wd, api.base, config={"metrics_file": mfile,
                                         "metrics_interval_ms": 200}).start()
    n = 100
    jobs = [avp.text_job(i) for i in range(n)] + [avp.text_job(n, to="+15559999999")]
    cl = d.client()
    answers = cl.pipeline(jobs)
    check(all(a["ok"] for a in answers), "submits ok")

    def metrics_when_done():
        try:
            with open(mfile) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return text if 'avenping_jobs{state="sent"} %d\n' % n in text else None

    text = wait_for(metrics_when_done, 30, "the metrics file to show %d sent" % n)
    types, samples = parse_prometheus(text)
    val = {(s[0], tuple(sorted(s[1].items()))): s[2] for s in samples}

    def get(name, **labels):
        k = (name, tuple(sorted(labels.items())))
        check(k in val, "series %s%s present" % (name, labels))
        return val[k]

    for st in ("queued", "sending", "retrying", "sent", "failed", "expired", "cancelled",
               "uncertain"):
        get("avenping_jobs", state=st)
    check(types["avenping_jobs"] == "gauge", "jobs is a gauge")
    check(get("avenping_jobs", state="failed") == 1, "one failed job")
    check(types["avenping_sends_total"] == "counter", "sends_total is a counter")
    check(get("avenping_sends_total", outcome="sent") == n, "sends by outcome: sent")
    check(get("avenping_sends_total", outcome="fail") == 1, "sends by outcome: fail")
    check(types["avenping_http_request_duration_seconds"] == "histogram", "latency histogram")
    buckets = sorted(((float(s[1]["le"]), s[2]) for s in samples
                      if s[0] == "avenping_http_request_duration_seconds_bucket"))
    check(len(buckets) >= 5 and buckets[-1][0] == float("inf"), "buckets up to +Inf")
    check(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "cumulative buckets")
    count = get("avenping_http_request_duration_seconds_count")
    check(count == n + 1 and buckets[-1][1] == count, "+Inf bucket == count == %d" % (n + 1))
    check(get("avenping_http_request_duration_seconds_sum") > 0, "latency sum")
    for s in avp.SENDERS:
        check(get("avenping_sender_rate", phone_number_id=s) == 100000, "sender %s rate" % s)
        check(get("avenping_sender_paused", phone_number_id=s) == 0, "sender %s not paused" % s)
    check(get("avenping_oldest_due_job_age_seconds") == 0, "nothing due is waiting")
    check(get("avenping_submitted_total") == n + 1, "submitted_total")
    # The totals of `stats` that were missing from the file.
    st = cl.stats()
    check(1 <= get("avenping_http_connects_total") <= st["httpConnects"],
          "http_connects_total (stats: %d)" % st["httpConnects"])
    check(get("avenping_tls_handshakes_total") == 0, "no TLS over http://")
    check(get("avenping_purged_total") == 0 and get("avenping_unreadable_jobs") == 0,
          "purged_total and unreadable_jobs")
    check(types["avenping_http_connects_total"] == "counter", "connects is a counter")
    # The daemon rewrites it: an old file is replaced, never appended to.
    os.unlink(mfile)
    wait_for(lambda: os.path.exists(mfile), 10, "the file to be rewritten")
    parse_prometheus(open(mfile).read())
    cl.close()
    check(d.stop() == 0, "daemon exits 0")


def ctl_usage(wd):
    """Exit codes 0/1/2, --help for every command, --json answers, JSON
    Lines import with its idempotency keys, single sends and templates."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    commands = ["send", "template", "import", "status", "list", "campaign", "report", "cancel",
                "pause", "resume", "retry", "stats", "watch", "ping"]
    for c in commands:
        p = ctl(d, c, "--help")
        check(p.returncode == 0 and p.stdout.startswith("usage: avenpingctl"),
              "%s --help: %d %r" % (c, p.returncode, p.stdout[:80]))
    check(ctl(d, "--help").returncode == 0, "--help")
    for args in (["bogus"], ["list"], ["status"], ["import", "x.csv"], ["retry", "--campaign", "c"],
                 ["list", "--campaign", "c", "--limit", "5000"], ["ping", "--nope"],
                 ["cancel", "1", "--campaign", "c"], ["pause"], ["cancel", ""], ["status", ""],
                 ["campaign", "c", "--interval", "1"],
                 ["send", "--type", "bogus", "--from", "1", "--to", "2", "--message", "{}"]):
        p = ctl(d, *args)
        check(p.returncode == 2, "usage error for %s: exit %d" % (args, p.returncode))
    check(ctl(d, "status", "999999").returncode == 1, "NOT_FOUND exits 1")
    # Job ids are strings, opaque to clients: one that is not digits names
    # no job (NOT_FOUND, a failed request: 1), it is no usage error (2).
    for args in (["status", "abc"], ["status", "nonexistent"], ["cancel", "abc"],
                 ["retry", "abc"], ["retry", "-1"], ["cancel", "0017"]):
        p = ctl(d, *args)
        check(p.returncode == 1 and "NOT_FOUND" in p.stderr,
              "%s: exit %d %s" % (args, p.returncode, p.stderr))
    check(ctl(d, "campaign", "nope").returncode == 1, "unknown campaign exits 1")
    p = ctl(d, "list", "--campaign", "nope")
    check(p.returncode == 1 and p.stdout == "", "no table over an error: %r" % p.stdout)
    p = subprocess.run([CTL, "--socket", wd.file("no.sock"), "ping"], capture_output=True,
                       text=True)
    check(p.returncode == 1 and "cannot connect" in p.stderr and "is avenpingd running" in p.stderr,
          "no daemon: exit 1 with a hint: %s" % p.stderr)
    for argv, why in ((["--socket", "", "ping"], "empty path"),
                      (["--socket"], "needs a value")):
        p = subprocess.run([CTL] + argv, capture_output=True, text=True)
        check(p.returncode == 2 and why in p.stderr, "%s: usage error: %d %s"
              % (argv, p.returncode, p.stderr))
    # A daemon that does not answer (stopped): the message names the
    # socket and the timeout.
    d.proc.send_signal(signal.SIGSTOP)
    try:
        p = subprocess.run([CTL, "--socket", d.socket, "--timeout", "0.5", "ping"],
                           capture_output=True, text=True)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    check(p.returncode == 1 and "no answer from %s within 0.5 s" % d.socket in p.stderr,
          "timeout named: %s" % p.stderr)
    p = subprocess.run("%s --socket %s stats > /dev/full" % (CTL, d.socket), shell=True,
                       capture_output=True, text=True)
    check(p.returncode == 1 and "writing the output" in p.stderr, "a full stdout said: %s"
          % p.stderr)

    check(ctl_json(d, "ping")["version"], "ping --json")
    r = ctl_json(d, "send", "--from", "1000001", "--to", "+15550001", "--text", "hello",
                 "--campaign", "single", "--key", "k-1")
    check(r["ok"] and r["duplicate"] is False, "send: %s" % r)
    r2 = ctl_json(d, "send", "--from", "1000001", "--to", "+15550001", "--text", "hello",
                  "--key", "k-1")
    check(r2["duplicate"] is True and r2["job"] == r["job"], "same key: duplicate")
    t = ctl_json(d, "template", "--from", "1000002", "--to", "15550002", "--name", "promo",
                 "--param", "Ann", "--param", "10%", "--campaign", "single")
    wait_for(lambda: unfinished(campaign(d, "single")) == 0, 30, "the two sends")
    tsend = [s for s in api.sends() if s["route"] == "/v2/templates/send"]
    check(len(tsend) == 1, "one template send")
    check(tsend[0]["body"]["components"][0]["parameters"][1]["text"] == "10%", "params in order")
    st = ctl_json(d, "status", t["job"])["job"]
    check(st["state"] == "sent" and st["wamid"] == tsend[0]["wamid"], "status of the template")

    # JSON Lines: campaign and key added where missing; a bad line is
    # reported with its number and the rest goes on.
    jl = wd.file("jobs.jsonl")
    with open(jl, "w") as f:
        for i in range(1, 51):
            f.write(json.dumps(avp.text_job(i, id=i)) + "\n")
        f.write("not json\n\n")
        f.write(json.dumps(avp.text_job(99, idempotencyKey="own-key", campaign=None)) + "\n")
    p = ctl(d, "--json", "import", jl, "--campaign", "jl")
    check(p.returncode == 1, "a bad line makes the import exit 1")
    s = json.loads(p.stdout)
    check(s["created"] == 51 and s["failed"] == 1, "jsonl summary %s" % s)
    check("line 51: not a JSON object" in p.stderr, "bad line named: %r" % p.stderr)
    check(ctl_json(d, "status", "--key", line_key("jl", avp.text_job(7, id=7)))["job"]["campaign"]
          == "jl", "derived key")
    check(ctl_json(d, "status", "--key", "own-key")["job"]["campaign"] == "jl",
          "own key kept, \"campaign\": null taken as none given")
    p = ctl(d, "--json", "import", jl, "--campaign", "jl")
    s = json.loads(p.stdout)
    check(s["created"] == 0 and s["duplicates"] == 51, "jsonl re-run: %s" % s)
    page = ctl_json(d, "list", "--campaign", "jl", "--limit", "20")
    check(len(page["jobs"]) == 20 and page["next"] == page["jobs"][-1]["id"], "list page")
    p = ctl(d, "--json", "list", "--campaign", "jl", "--all")
    check(len(p.stdout.splitlines()) == 51, "list --all: one line per job")
    # Under `pause --all` no sender shows as sending.
    check(ctl(d, "pause", "--all").returncode == 0, "pause --all")
    p = ctl(d, "stats")
    rows = p.stdout.split("SENDER", 1)[1].splitlines()[1:]
    check(rows and all("paused" in r for r in rows), "senders paused under --all: %s" % p.stdout)
    check(ctl(d, "resume", "--all").returncode == 0, "resume --all")
    # SIGTERM during an import: it stops at the first SHUTTING_DOWN answer
    # and says so once (it printed a line per row still in its window).
    big = wd.file("big.csv")
    write_csv(big, 200000, avp.SENDERS)
    imp = subprocess.Popen([CTL, "--socket", d.socket, "import", big, "--campaign", "late",
                            "--text", "x"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    wait_for(lambda: ctl_json(d, "stats")["stats"]["submitted"] > 20000, 60, "the import under way")
    # Slow answers keep the stopping daemon up (it waits for them) while
    # the import's next rows are answered SHUTTING_DOWN.
    api.control(latency_ms=3000)
    # A request decided after the change is held 3 s: wait for one, so that
    # the SIGTERM finds it in flight (a fixed 0.2 s found none under ASan on
    # busy cores, where the daemon sends in bursts seconds apart: it stopped
    # at once and closed the import's connection, no SHUTTING_DOWN).
    held = api.stats()["requests"]
    wait_for(lambda: api.stats()["requests"] > held, 60, "a request under the new latency")
    d.proc.send_signal(signal.SIGTERM)
    out, err = imp.communicate(timeout=60)
    check(imp.returncode == 1 and "the daemon is stopping" in err
          and err.count("SHUTTING_DOWN") == 1, "the import stopped once: %d %s"
          % (imp.returncode, err[-600:]))
    check(d.proc.wait(30) == 0, "daemon exits 0")


def ctl_import_edges(wd):
    """What an import does with files that are not clean: JSON Lines that
    hold other ops (refused per line, nothing cancelled), blank CSV lines
    (not rows: no failure, the same keys wherever they are), malformed CSV
    (named, with the rows after it not imported), ragged rows and keys that
    repeat in one file (named, not sent), a bad --priority (usage
    error before anything is sent), and a report of an unknown campaign
    (leaves an earlier report file alone)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    later = str(int(time.time()) + 3600)
    # A job of another campaign that a hostile JSON Lines file tries to cancel.
    p = ctl(d, "send", "--from", avp.SENDERS[0], "--to", "+15550009999", "--text", "keep",
            "--campaign", "victim", "--not-before", later)
    check(p.returncode == 0, "send: %s" % p.stderr)
    jl = wd.file("ops.jsonl")
    with open(jl, "w") as f:
        f.write(json.dumps(avp.text_job(1, to="+15550000001")) + "\n")
        f.write(json.dumps({"op": "cancel", "campaign": "victim"}) + "\n")
        f.write(json.dumps({"op": "ping"}) + "\n")
    p = ctl(d, "--json", "import", jl, "--campaign", "ops")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 1 and summary["failed"] == 2,
          "only the send line made a job: %s" % summary)
    check(p.stderr.count('op must be "send" or "template_send"') == 2, "named: %s" % p.stderr)
    # --json lists the refused rows too, for scripts: the client's own
    # refusals without an error code, the daemon's with its code; at most
    # 100 of them, "failed" counts all.
    refused = summary.get("refusedRows")
    check(refused is not None and [r["row"] for r in refused] == [2, 3] and
          all("error" not in r and 'op must be "send"' in r["message"] for r in refused),
          "the refused lines listed: %s" % refused)
    many = wd.file("many.jsonl")
    with open(many, "w") as f:
        for i in range(150):
            job = avp.text_job(i, to="+15550000%03d" % i)
            job["message"]["phoneNumberId"] = ""  # the daemon's VALIDATION_ERROR
            f.write(json.dumps(job) + "\n")
    p = ctl(d, "--json", "import", many, "--campaign", "many")
    summary = json.loads(p.stdout)
    refused = summary.get("refusedRows") or []
    check(p.returncode == 1 and summary["failed"] == 150 and len(refused) == 100 and
          refused[0]["row"] == 1 and refused[99]["row"] == 100 and
          all(r["error"] == "VALIDATION_ERROR" and "phoneNumberId" in r["message"]
              for r in refused), "the first 100 of 150 refused rows: %d %s" %
          (len(refused), refused[:2]))
    check(campaign(d, "victim")["counts"].get("cancelled", 0) == 0, "nothing was cancelled")
    # A read error is not the end of the file: named, exit 1 (JSON Lines
    # took it for the end and exited 0 with nothing imported). The first
    # read of /proc/self/mem fails with EIO (a directory, the error used
    # here before, is now refused before it is read: ctl_import_directory).
    p = ctl(d, "--json", "import", "/proc/self/mem", "--format", "jsonl", "--campaign", "readerr")
    check(p.returncode == 1 and "Input/output error" in p.stderr and "not imported" in p.stderr,
          "a read error named: %d %s" % (p.returncode, p.stderr))

    # Blank lines are not rows: no failure, and keys do not move with them.
    rows = ["+15550000011,%s,a" % avp.SENDERS[0], "+15550000012,%s,b" % avp.SENDERS[0]]
    c1, c2 = wd.file("blank1.csv"), wd.file("blank2.csv")
    with open(c1, "w") as f:
        f.write("to,phoneNumberId,text\n" + rows[0] + "\n\n" + rows[1] + "\n\n")
    with open(c2, "w") as f:
        f.write("to,phoneNumberId,text\n\n" + rows[0] + "\n" + rows[1] + "\n")
    p = ctl(d, "--json", "import", c1, "--campaign", "blank")
    summary = json.loads(p.stdout)
    check(p.returncode == 0 and summary["created"] == 2 and summary["failed"] == 0,
          "blank lines are not rows: %s %s" % (summary, p.stderr))
    p = ctl(d, "--json", "import", c2, "--campaign", "blank")
    summary = json.loads(p.stdout)
    check(p.returncode == 0 and summary["created"] == 0 and summary["duplicates"] == 2,
          "the same rows with blank lines elsewhere: same keys: %s" % summary)

    # Malformed CSV: named, and the rows after it are said not to be imported.
    bad = wd.file("bad.csv")
    with open(bad, "w") as f:
        f.write("to,phoneNumberId,text\n+15550000021,%s,a\n+15550000022,%s,\"open quote\n"
                "+15550000023,%s,c\n" % (avp.SENDERS[0], avp.SENDERS[0], avp.SENDERS[0]))
    p = ctl(d, "import", bad, "--campaign", "bad")
    check(p.returncode == 1 and "malformed CSV (an unterminated or stray quote, or a broken "
          "byte order mark); this row and the rest of the file were not imported" in p.stderr,
          "malformed CSV: exit %d: %s" % (p.returncode, p.stderr))
    # A field over the reader's bound, and a broken byte order mark: said
    # in words, with the line (were "Argument list too long", "Invalid
    # argument").
    # The row with the big field is refused and the rows after it go on
    # (the whole import used to stop there), keeping their row numbers.
    big = wd.file("big.csv")
    with open(big, "w") as f:
        f.write("to,phoneNumberId,text\n+15550000060,%s,\"%s\nstill\"\n+15550000061,%s,after\n"
                % (avp.SENDERS[0], "x" * (1 << 20), avp.SENDERS[0]))
    p = ctl(d, "--json", "import", big, "--campaign", "big")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and "row 1: line 2: a field over 1 MiB" in p.stderr
          and "not sent" in p.stderr and summary["created"] == 1 and summary["failed"] == 1,
          "big field: %s %s" % (summary, p.stderr))
    wait_for(lambda: campaign(d, "big")["counts"].get("sent", 0) == 1, 30, "the row after sent")
    cl = d.client()
    after = cl.request({"op": "get", "idempotencyKey":
                        content_key("big", ["+15550000061", avp.SENDERS[0], "after"])})
    cl.close()
    check(after["ok"] and after["job"]["to"] == "+15550000061", "row 2 keyed by its content: %s"
          % after)
    bom = wd.file("bom.csv")
    with open(bom, "wb") as f:
        f.write(b"\xef\xbbto,phoneNumberId,text\n")
    p = ctl(d, "import", bom, "--campaign", "bom")
    check(p.returncode == 1 and "line 1 (the header): malformed CSV" in p.stderr,
          "broken BOM: %s" % p.stderr)

    # Ragged rows (an unquoted comma shifts the columns) are named and not
    # sent; the rows around them are, with their own row numbers as keys.
    rag = wd.file("ragged.csv")
    with open(rag, "w") as f:
        f.write("\nto,phoneNumberId,text\n+15550000031,%s,fine\n+15550000032,%s,Hello, world\n"
                "+15550000033,%s\n+15550000034,%s,also fine\n" % ((avp.SENDERS[0],) * 4))
    p = ctl(d, "--json", "import", rag, "--campaign", "ragged")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 2 and summary["failed"] == 2,
          "two ragged rows refused, two sent: %s %s" % (summary, p.stderr))
    check("row 2: line 4: 4 fields where the header has 3" in p.stderr
          and "row 3: line 5: 2 fields where the header has 3" in p.stderr,
          "ragged rows named with their lines: %s" % p.stderr)
    wait_for(lambda: campaign(d, "ragged")["counts"].get("sent", 0) == 2, 30,
             "the two whole rows sent")
    texts = sorted(s["body"]["text"] for s in api.sends()
                   if s["to"].lstrip("+") in ("15550000031", "15550000032", "15550000033",
                                              "15550000034"))
    check(texts == ["also fine", "fine"], "only the whole rows went out: %s" % texts)

    # A --key-column value that repeats in one file is named, not swallowed
    # as a duplicate of the row before.
    kc = wd.file("keys.csv")
    with open(kc, "w") as f:
        f.write("to,phoneNumberId,text,ref\n")
        for i, ref in enumerate(["A", "B", "A", "C", "B"]):
            f.write("+1555000004%d,%s,t%d,%s\n" % (i, avp.SENDERS[0], i, ref))
    p = ctl(d, "--json", "import", kc, "--campaign", "keys", "--key-column", "ref")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 3 and summary["failed"] == 2
          and summary["duplicates"] == 0, "repeated keys refused: %s %s" % (summary, p.stderr))
    check('row 3: line 4: idempotency key "keys:A" is row 1\'s too' in p.stderr
          and 'row 5: line 6: idempotency key "keys:B" is row 2\'s too' in p.stderr,
          "repeated keys named with their first row: %s" % p.stderr)
    # Run again: the three are duplicates now, the repeats still named.
    p = ctl(d, "--json", "import", kc, "--campaign", "keys", "--key-column", "ref")
    summary = json.loads(p.stdout)
    check(summary["duplicates"] == 3 and summary["failed"] == 2 and summary["created"] == 0,
          "the same import again: %s" % summary)
    # An empty key cell is reported, not keyed by its row number: "keys2:2"
    # would be the key of the next file's ref 2, which would then be
    # answered as a duplicate and never sent.
    kc2 = wd.file("keys2.csv")
    with open(kc2, "w") as f:
        f.write("to,phoneNumberId,text,ref\n+15550000050,%s,t,17\n+15550000051,%s,t,\n"
                % (avp.SENDERS[0], avp.SENDERS[0]))
    p = ctl(d, "--json", "import", kc2, "--campaign", "keys2", "--key-column", "ref")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 1 and summary["failed"] == 1
          and "row 2: line 3: empty key column" in p.stderr, "empty key refused: %s %s"
          % (summary, p.stderr))
    with open(kc2, "w") as f:
        f.write("to,phoneNumberId,text,ref\n+15550000052,%s,t,2\n" % avp.SENDERS[0])
    p = ctl(d, "--json", "import", kc2, "--campaign", "keys2", "--key-column", "ref")
    summary = json.loads(p.stdout)
    check(p.returncode == 0 and summary["created"] == 1, "ref 2 is new: %s" % summary)

    p = ctl(d, "import", c1, "--campaign", "prio", "--priority", "urgent")
    check(p.returncode == 2 and "--priority" in p.stderr, "bad --priority: %d %s"
          % (p.returncode, p.stderr))
    check(ctl(d, "campaign", "prio").returncode == 1, "nothing of it was submitted")

    # Pausing a name that matches nothing is allowed (a campaign may be
    # paused before its import) but said, in case it is a typo.
    # Header names in another case and with blanks around them (a
    # spreadsheet's "To", a hand-written "to, text") are found; the exact
    # name goes first when both are there.
    loose = wd.file("loose.csv")
    with open(loose, "w") as f:
        f.write("To, PhoneNumberId ,Text,text\n+15550007761,%s,wrong,right\n" % avp.SENDERS[0])
    p = ctl(d, "--json", "import", loose, "--campaign", "loose")
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 1,
          "loose header names: %d %s %s" % (p.returncode, p.stdout, p.stderr))
    wait_for(lambda: any(s["body"].get("to") == "+15550007761" for s in api.sends()), 10,
             "the loose row sent")
    sent = [s for s in api.sends() if s["body"].get("to") == "+15550007761"]
    check(sent[0]["body"].get("text") == "right" and
          sent[0]["phoneNumberId"] == avp.SENDERS[0], "the columns it took: %s" % sent[0])

    p = ctl(d, "pause", "--campaign", "blnak")
    check(p.returncode == 0 and 'no jobs of campaign "blnak" are known' in p.stderr,
          "pause of an unknown campaign: %d %s" % (p.returncode, p.stderr))
    # Paused before its import, the campaign is known, with nothing in it
    # (it was NOT_FOUND, so a script that paused, then checked, failed).
    cl = d.client()
    a = cl.request({"op": "campaign", "campaign": "blnak"})
    check(a.get("ok") is True and a["campaign"]["total"] == 0
          and a["campaign"]["paused"] is True
          and set(a["campaign"]["counts"].values()) == {0}, "a paused empty campaign: %s" % a)
    a = cl.request({"op": "list", "campaign": "blnak"})
    check(a.get("ok") is True and a["jobs"] == [] and a["next"] is None,
          "list of a paused empty campaign: %s" % a)
    # cancel and retry know it too: nothing to change (they said NOT_FOUND,
    # so a script that paused, then cancelled before its import, failed).
    a = cl.request({"op": "cancel", "campaign": "blnak"})
    check(a.get("ok") is True and a.get("cancelled") == 0, "cancel of a paused empty campaign: %s"
          % a)
    a = cl.request({"op": "retry", "campaign": "blnak", "state": "failed"})
    check(a.get("ok") is True and a.get("requeued") == 0, "retry of a paused empty campaign: %s"
          % a)
    p = ctl(d, "cancel", "--campaign", "blnak")
    check(p.returncode == 0, "avenpingctl cancel of it: %d %s" % (p.returncode, p.stderr))
    check(ctl(d, "resume", "--campaign", "blnak").returncode == 0, "resume blnak")
    a = cl.request({"op": "campaign", "campaign": "blnak"})
    check(a.get("error") == "NOT_FOUND", "resumed and empty: unknown again: %s" % a)
    cl.close()
    p = ctl(d, "pause", "--campaign", "blank")
    check(p.returncode == 0 and p.stderr == "", "a known campaign: no note: %s" % p.stderr)
    p = ctl(d, "resume", "--phone-number-id", "999999")
    check(p.returncode == 0 and 'no jobs of sender "999999" are known' in p.stderr,
          "an unknown sender: %d %s" % (p.returncode, p.stderr))
    p = ctl(d, "pause", "--phone-number-id", avp.SENDERS[0])
    check(p.returncode == 0 and p.stderr == "", "a known sender: no note: %s" % p.stderr)
    # Its resume neither: the resume forgets a sender without jobs, and the
    # check after it called the sender just resumed unknown.
    p = ctl(d, "resume", "--phone-number-id", avp.SENDERS[0])
    check(p.returncode == 0 and p.stderr == "", "resume of a paused sender: no note: %s"
          % p.stderr)
    # A pause of an unknown sender is noted (the pause itself made it known
    # when the check came after it).
    p = ctl(d, "pause", "--phone-number-id", "888888")
    check(p.returncode == 0 and 'no jobs of sender "888888" are known' in p.stderr,
          "pause of an unknown sender: %d %s" % (p.returncode, p.stderr))
    ctl(d, "resume", "--phone-number-id", "888888")

    out = wd.file("report.csv")
    with open(out, "w") as f:
        f.write("an earlier report\n")
    p = ctl(d, "report", "--campaign", "no-such-campaign", "--output", out)
    check(p.returncode == 1, "report of an unknown campaign fails: %d" % p.returncode)
    with open(out) as f:
        check(f.read() == "an earlier report\n", "the earlier report file is untouched")
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_long_lines(wd):
    """JSON Lines rows longer than the daemon's line limit are refused by
    avenpingctl one by one, without reading them whole into memory, and
    the import goes on: a 40 MiB line made it hold gigabytes, and a 5 MiB
    one (refused by the daemon, which then closed the connection) ended the
    import with the rows after it never sent and the rows before counted
    failed though stored."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, {}).start()
    path = wd.file("long.jsonl")
    with open(path, "w") as f:
        for i in range(7):
            job = avp.text_job(i, to="+1674000%04d" % i)
            del job["op"]
            job["op"] = "send"
            if i == 2:
                job["message"]["text"] = "x" * (40 << 20)
            f.write(json.dumps(job) + "\n")
    p = subprocess.Popen([CTL, "--socket", d.socket, "--json", "import", path, "--campaign",
                          "long"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(out)
    print("import: %s; %s" % (summary, err.strip()))
    check(p.returncode == 1, "exit 1 (a row failed): %d" % p.returncode)
    check(summary["created"] == 6 and summary["failed"] == 1, "6 rows stored, 1 refused: %s"
          % summary)
    check("line 3: longer than" in err, "the long line named: %s" % err)
    check(usage.ru_maxrss < 200 * 1024, "avenpingctl's memory stayed small: %d KiB"
          % usage.ru_maxrss)
    cl = d.client()
    st = wait_all_final(cl, 30)
    check(st["counts"]["sent"] == 6, "the 6 sent: %s" % st["counts"])
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_formats(wd):
    """An import's format: --format wins; else a .jsonl, .ndjson or .json
    name (in any case) is JSON Lines and .csv is CSV; else (other names,
    stdin, a pipe) the content decides: '{' first, after a byte order mark
    and blank lines, is JSON Lines. JSON Lines in jobs.json, in a file
    without an extension and in jobs.JSONL was read as CSV and failed on
    its "header"; the bytes looked at on a pipe are not lost."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, config={"rate_per_number": 1000}).start()
    sender = avp.SENDERS[0]
    expected = {}  # recipient digits -> text the API must have received

    def job_of(base, i):
        job = avp.text_job(i, sender=sender, to="+1666%03d%04d" % (base, i))
        job["message"]["text"] = "fmt-%d-%d" % (base, i)
        return job

    def jobs(base, n):
        lines = []
        for i in range(n):
            job = job_of(base, i)
            expected[job["message"]["to"].lstrip("+")] = job["message"]["text"]
            lines.append(json.dumps(job) + "\n")
        return "".join(lines)

    def csv_rows(base, n):
        out = "to,phoneNumberId,text\n"
        for i in range(n):
            to = "+1666%03d%04d" % (base, i)
            expected[to.lstrip("+")] = "fmt-%d-%d" % (base, i)
            out += "%s,%s,fmt-%d-%d\n" % (to, sender, base, i)
        return out

    def imported(p, name, n):
        check(p.returncode == 0, "%s: exit %d: %s" % (name, p.returncode, p.stderr[-1000:]))
        summary = json.loads(p.stdout)
        check(summary["created"] == n and summary["failed"] == 0, "%s: %s" % (name, summary))

    # JSON Lines under names that do not say .jsonl: by name, or by content.
    for base, fname in ((1, "jobs.json"), (2, "jobs"), (3, "jobs.JSONL"), (4, "Jobs.NDJSON")):
        path = wd.file(fname)
        with open(path, "w") as f:
            f.write(jobs(base, 5))
        imported(ctl(d, "--json", "import", path, "--campaign", "fmt%d" % base), fname, 5)
    # Rows that name their own campaign: counted apart in the summary (their
    # jobs count there, not in --campaign's); "campaign": null is the import's.
    path = wd.file("mixed.jsonl")
    with open(path, "w") as f:
        for i, own in enumerate(("fmt-other", None, "fmt-mixed", "fmt-other")):
            job = avp.text_job(i, sender=sender, to="+1666099%04d" % i)
            job["message"]["text"] = "fmt-99-%d" % i
            expected[job["message"]["to"].lstrip("+")] = job["message"]["text"]
            if own is not None or i == 1:
                job["campaign"] = own
            f.write(json.dumps(job) + "\n")
    p = ctl(d, "--json", "import", path, "--campaign", "fmt-mixed")
    imported(p, "rows naming campaigns", 4)
    check(json.loads(p.stdout)["otherCampaignRows"] == 2, "other campaigns: %s" % p.stdout)
    check(ctl_json(d, "campaign", "fmt-other")["campaign"]["total"] == 2, "fmt-other's jobs")
    p = ctl(d, "import", path, "--campaign", "fmt-mixed")
    check(p.returncode == 0 and "2 of the rows name another campaign" in p.stdout,
          "text summary: %r" % p.stdout)
    # "idempotencyKey": null is no key given: the row's is derived, and a
    # second run creates nothing (it stored keyless jobs, sent twice).
    path = wd.file("nullkey.jsonl")
    with open(path, "w") as f:
        for i in range(3):
            job = avp.text_job(i, sender=sender, to="+1666098%04d" % i, idempotencyKey=None)
            job["message"]["text"] = "fmt-98-%d" % i
            expected[job["message"]["to"].lstrip("+")] = job["message"]["text"]
            f.write(json.dumps(job) + "\n")
    imported(ctl(d, "--json", "import", path, "--campaign", "fmt-nullkey"), "null keys", 3)
    p = ctl(d, "--json", "import", path, "--campaign", "fmt-nullkey")
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 0
          and json.loads(p.stdout)["duplicates"] == 3, "null keys, again: %s" % p.stdout)
    job = avp.text_job(1, sender=sender, to="+16660980001", idempotencyKey=None)
    job["message"]["text"] = "fmt-98-1"
    check(ctl_json(d, "status", "--key", line_key("fmt-nullkey", job))["job"]["to"].lstrip("+")
          == "16660980001", "the derived key of line 2")
    # Content sniffed past a byte order mark, blank lines (CRLF too) and
    # indentation; the keys are the lines' content without them.
    path = wd.file("jobs-bom")
    with open(path, "wb") as f:
        # A line of blanks at the end is no row either (it was "not a JSON object").
        f.write(b"\xef\xbb\xbf\n\r\n  " + jobs(5, 3).encode() + b" \t \r\n")
    imported(ctl(d, "--json", "import", path, "--campaign", "fmt5"), "BOM and blank lines", 3)
    check(ctl_json(d, "status", "--key", line_key("fmt5", job_of(5, 0)))["job"]["to"].lstrip("+")
          == "16660050000", "the first job keyed by its content")
    # Standard input (a pipe): the bytes the sniff read are read again.
    imported(ctl(d, "--json", "import", "-", "--campaign", "fmt6", stdin="\n" + jobs(6, 4)),
             "JSON Lines on stdin", 4)
    check(ctl_json(d, "status", "--key", line_key("fmt6", job_of(6, 0)))["job"]["to"].lstrip("+")
          == "16660060000", "stdin: the first job keyed by its content")
    # CSV without an extension, on stdin, and on a pipe named /dev/fd/N
    # (a shell's <(...)), whose rows must not be counted ahead: a second
    # open of the pipe took all but the first buffer's rows from the import.
    path = wd.file("contacts")
    with open(path, "w") as f:
        f.write(csv_rows(7, 4))
    imported(ctl(d, "--json", "import", path, "--campaign", "fmt7"), "CSV without extension", 4)
    imported(ctl(d, "--json", "import", "-", "--campaign", "fmt8", stdin=csv_rows(8, 3)),
             "CSV on stdin", 3)
    rfd, wfd = os.pipe()
    rows = csv_rows(9, 3000)

    def write_rows():
        with open(wfd, "w") as w:
            w.write(rows)
    writer = threading.Thread(target=write_rows)
    writer.start()
    try:
        p = subprocess.run([CTL, "--socket", d.socket, "--json", "import", "/dev/fd/%d" % rfd,
                            "--campaign", "fmt9"], capture_output=True, text=True, timeout=120,
                           pass_fds=(rfd,))
    finally:
        os.close(rfd)
        writer.join()
    imported(p, "CSV on a pipe", 3000)
    # --format wins over the name; .CSV is CSV whatever the content.
    path = wd.file("rows.json")
    with open(path, "w") as f:
        f.write(csv_rows(10, 2))
    imported(ctl(d, "--json", "import", path, "--campaign", "fmt10", "--format", "csv"),
             "--format csv on a .json name", 2)
    path = wd.file("ROWS.CSV")
    with open(path, "w") as f:
        f.write(csv_rows(11, 2))
    imported(ctl(d, "--json", "import", path, "--campaign", "fmt11"), ".CSV", 2)
    path = wd.file("odd.csv")
    with open(path, "w") as f:
        f.write(json.dumps(avp.text_job(1, sender=sender, to="+16660120000")) + "\n")
    p = ctl(d, "import", path, "--campaign", "fmt12")
    check(p.returncode == 1 and "line 1 (the header): malformed CSV" in p.stderr,
          "a .csv name is CSV, not sniffed: %d %s" % (p.returncode, p.stderr))

    # A terminal: one Ctrl-D (at a line's start) ends the input. An empty
    # one needed a second (the sniff's read saw the end, the reader read
    # the terminal again).
    def on_terminal(typed, campaign):
        master, slave = os.openpty()
        try:
            p = subprocess.Popen([CTL, "--socket", d.socket, "--json", "import", "-",
                                  "--campaign", campaign], stdin=slave,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            os.close(slave)
            os.write(master, typed.encode() + b"\x04")
            try:
                out, err = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise avp.TestFailure("%s: import still waiting after one Ctrl-D" % campaign)
        finally:
            os.close(master)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    p = on_terminal("", "fmt13")
    check(p.returncode == 1 and "header" in p.stderr, "empty terminal input: %d %s"
          % (p.returncode, p.stderr))
    imported(on_terminal(csv_rows(14, 2), "fmt14"), "CSV typed on a terminal", 2)

    # At the API: every job arrived, with its text.
    def got():
        return {s["to"].lstrip("+"): s["body"]["text"] for s in api.sends()
                if s["to"].lstrip("+").startswith("1666")}
    wait_for(lambda: len(got()) >= len(expected), 60, "the imported jobs sent")
    check(got() == expected, "the API got exactly the imported jobs: %s"
          % sorted(set(got().items()) ^ set(expected.items()))[:10])
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_queue_full(wd):
    """An import that meets max_queued stops there with one message naming
    the bound and what to do, instead of printing every refused row (15,001
    lines for a 20,000-row file in an audit) and sending the rest of the
    file in vain. Run again once jobs went out, it goes on where it
    stopped: rows already taken are duplicates."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, config={"max_queued": 500, "rate_per_number": 1000}).start()
    cl = d.client()
    check(cl.request({"op": "pause", "campaign": "full"}).get("ok") is True, "paused")
    path = wd.file("full.csv")
    with open(path, "w") as f:
        f.write("to,phoneNumberId,text\n")
        for i in range(20000):
            f.write("+1678%07d,%s,full-%d\n" % (i, avp.SENDERS[i % 5], i))
    p = ctl(d, "--json", "import", path, "--campaign", "full", "--quiet")
    summary = json.loads(p.stdout)
    lines = p.stderr.strip().split("\n")
    print("import: %s; %d lines on stderr" % (summary, len(lines)))
    check(p.returncode == 1, "exit 1: %d" % p.returncode)
    check(summary["created"] == 500, "500 taken: %s" % summary)
    check(summary["rows"] < 20000, "the rest of the file not sent: %s" % summary)
    check(len(lines) == 2, "two lines, not one per row: %s" % lines[:5])
    check("max_queued" in p.stderr and "import stopped: the daemon's queue is full" in p.stderr
          and "the rest of the file was not sent" in p.stderr, "said once: %s" % p.stderr)
    check(cl.request({"op": "resume", "campaign": "full"}).get("ok") is True, "resumed")
    wait_for(lambda: cl.stats()["counts"]["sent"] >= 500, 60, "the 500 sent")
    # Paused again, so that the next rows wait (to be cancelled below).
    check(cl.request({"op": "pause", "campaign": "full"}).get("ok") is True, "paused again")
    # A window of submits counts against max_queued until committed, the
    # duplicates among them too: a small one leaves room for new rows.
    p = ctl(d, "--json", "import", path, "--campaign", "full", "--quiet", "--window", "50")
    summary = json.loads(p.stdout)
    check(summary["duplicates"] == 500 and summary["created"] >= 100,
          "run again: the 500 are duplicates, the next ones taken: %s" % summary)
    check("cancelled" not in p.stderr, "no note without cancelled jobs: %s" % p.stderr)
    # Cancelled, then imported again: the rows stay cancelled, and the
    # import says so (it reported plain duplicates).
    cancelled = cl.request({"op": "cancel", "campaign": "full"})["cancelled"]
    p = ctl(d, "--json", "import", path, "--campaign", "full", "--quiet", "--window", "50")
    check(("holds %d cancelled jobs" % cancelled) in p.stderr and cancelled >= 100,
          "the note: %d cancelled, %s" % (cancelled, p.stderr))
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_output_gone(wd):
    """`watch` and `campaign --follow` end when nobody reads their output
    any more (`| head -1`): they ignore SIGPIPE and went on writing into the
    closed pipe for ever, so the shell's pipeline never ended. Exit 1,
    without a message (a reader that went away is no news)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()

    def watchers():
        return ctl_json(d, "stats")["stats"]["connections"] - 1  # less the stats one

    def ends_unread(p, what):
        """Closes p's output after one line was read; p must end by itself."""
        p.stdout.close()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            raise avp.TestFailure("%s still running after its reader left" % what)
        check(p.returncode == 1 and p.stderr.read() == "", "%s: exit 1, nothing said: %d"
              % (what, p.returncode))

    # The pipeline of the manual page's kind: head takes the first event and
    # leaves; the events after it (sending, sent) go to a closed pipe.
    sh = subprocess.Popen("%s --socket %s --json watch | head -1" % (CTL, d.socket), shell=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
    wait_for(lambda: watchers() == 1, 10, "the watcher")
    check(ctl(d, "send", "--from", avp.SENDERS[0], "--to", "+15550100001", "--text", "a")
          .returncode == 0, "send")
    try:
        out, err = sh.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(sh.pid, signal.SIGKILL)  # the shell and the watcher
        sh.wait()
        raise avp.TestFailure("`watch | head -1` still running after head left")
    check(json.loads(out)["event"] == "job" and err == "", "one event: %r %r" % (out, err))

    # No event after the reader left: the watcher notices while it waits.
    cl = d.client()
    wait_all_final(cl, 30)
    w = subprocess.Popen([CTL, "--socket", d.socket, "--json", "watch"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_for(lambda: watchers() == 2, 10, "the second watcher")  # cl is connected too
    check(ctl(d, "send", "--from", avp.SENDERS[0], "--to", "+15550100002", "--text", "b")
          .returncode == 0, "send")
    wait_all_final(cl, 30)  # its events are in the pipe: no more will come
    check(json.loads(w.stdout.readline())["event"] == "job", "an event read")
    ends_unread(w, "an idle watcher")

    # campaign --follow of a campaign that cannot finish (paused).
    check(ctl(d, "pause", "--campaign", "held").returncode == 0, "pause")
    check(ctl(d, "send", "--from", avp.SENDERS[0], "--to", "+15550100003", "--text", "c",
              "--campaign", "held").returncode == 0, "send")
    f = subprocess.Popen([CTL, "--socket", d.socket, "campaign", "held", "--follow",
                          "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    check("held: 0/1 done" in f.stdout.readline(), "a progress line")
    ends_unread(f, "campaign --follow")
    # A full disk is news: said, exit 1.
    p = subprocess.run("%s --socket %s campaign held --follow --interval 0.1 > /dev/full"
                       % (CTL, d.socket), shell=True, capture_output=True, text=True, timeout=20)
    check(p.returncode == 1 and "writing the output: No space left" in p.stderr,
          "follow into /dev/full: %d %s" % (p.returncode, p.stderr))
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_send_message(wd):
    """send --message JSON with --from, --to or --text: the flags replace
    those fields of the body (the help says they are merged into it). They
    were added beside them, and the daemon refused the body ("message.to
    appears more than once")."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    body = {"phoneNumberId": avp.SENDERS[0], "to": "+15550200001", "text": "from --message"}
    p = ctl(d, "--json", "send", "--message", json.dumps(body), "--from", avp.SENDERS[1],
            "--to", "+15550200002", "--text", "from the flags", "--campaign", "merge")
    check(p.returncode == 0, "send: exit %d: %s" % (p.returncode, p.stderr))
    job = json.loads(p.stdout)["job"]
    # Fields the flags do not name stay as the body has them.
    media = {"phoneNumberId": avp.SENDERS[0], "to": "+15550200003",
             "media": {"type": "image", "mediaId": "m-1"}, "caption": "kept"}
    p = ctl(d, "send", "--type", "media", "--message", json.dumps(media), "--to", "+15550200004",
            "--campaign", "merge")
    check(p.returncode == 0, "media send: exit %d: %s" % (p.returncode, p.stderr))
    wait_for(lambda: unfinished(campaign(d, "merge")) == 0, 30, "the two sends")
    sent = {s["to"].lstrip("+"): s for s in api.sends()}
    check(set(sent) == {"15550200002", "15550200004"}, "sent to the flags' numbers: %s"
          % sorted(sent))
    check(sent["15550200002"]["body"] == {"phoneNumberId": avp.SENDERS[1], "to": "+15550200002",
                                          "text": "from the flags"},
          "text body: %s" % sent["15550200002"]["body"])
    check(sent["15550200004"]["body"] == dict(media, to="+15550200004"),
          "media body: %s" % sent["15550200004"]["body"])
    check(ctl_json(d, "status", job)["job"]["phoneNumberId"] == avp.SENDERS[1], "the job's sender")
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_options_after_command(wd):
    """Global options after the command are checked as before it: an empty
    --socket is a usage error (exit 2) in both places. After the command it
    was taken as the path "" and failed to connect (exit 1). -h is --help
    after the command too."""
    for argv in (["--socket", "", "ping"], ["ping", "--socket", ""], ["ping", "--socket="],
                 ["stats", "--json", "--socket", ""]):
        p = subprocess.run([CTL] + argv, capture_output=True, text=True, timeout=30)
        check(p.returncode == 2 and "--socket: empty path" in p.stderr and p.stdout == "",
              "%s: usage error: %d %s" % (argv, p.returncode, p.stderr))
    for argv in (["ping", "--timeout", "0"], ["ping", "--socket"], ["ping", "--json=yes"]):
        p = subprocess.run([CTL] + argv, capture_output=True, text=True, timeout=30)
        check(p.returncode == 2, "%s: usage error: %d %s" % (argv, p.returncode, p.stderr))
    # The path after the command is the one used.
    p = subprocess.run([CTL, "--socket", wd.file("a.sock"), "ping", "--socket", wd.file("b.sock")],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 1 and "cannot connect to %s" % wd.file("b.sock") in p.stderr,
          "the later --socket wins: %d %s" % (p.returncode, p.stderr))
    # -h after the command is its --help, as -h before it is the usage (it
    # was a positional argument: "wrong number of arguments", exit 2).
    for c in ("send", "import", "status", "list", "watch", "ping"):
        p = subprocess.run([CTL, c, "-h"], capture_output=True, text=True, timeout=30)
        check(p.returncode == 0 and p.stdout.startswith("usage: avenpingctl [--socket PATH] "
                                                        "[--json] %s" % c),
              "%s -h: %d %r %s" % (c, p.returncode, p.stdout[:80], p.stderr))
    # --language without --template (a text has none) was dropped without
    # a word; --param is refused so already.
    csvf = wd.file("t.csv")
    with open(csvf, "w") as f:
        f.write("to,text\n+15550000001,hi\n")
    for extra in (["--language", "fr_FR"], ["--param", "text"]):
        p = subprocess.run([CTL, "--socket", wd.file("a.sock"), "import", csvf, "--campaign", "c",
                            "--from", "1000001"] + extra, capture_output=True, text=True,
                           timeout=30)
        check(p.returncode == 2 and "%s needs --template" % extra[0] in p.stderr,
              "%s without --template: %d %s" % (extra, p.returncode, p.stderr))
    # retry JOB --state: the state was dropped (any final error state is
    # requeued), as cancel's is refused.
    p = subprocess.run([CTL, "--socket", wd.file("a.sock"), "retry", "17", "--state", "failed"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "retry JOB takes no --state" in p.stderr,
          "retry JOB --state: %d %s" % (p.returncode, p.stderr))
    # The campaign of campaign and report given both ways: a usage error
    # (the --campaign of "report spring --campaign summer" was dropped).
    for argv in (["campaign", "a", "--campaign", "b"], ["report", "a", "--campaign", "b"],
                 ["report", "--campaign", "a", "a"]):
        p = subprocess.run([CTL, "--socket", wd.file("a.sock")] + argv, capture_output=True,
                           text=True, timeout=30)
        check(p.returncode == 2 and "not both" in p.stderr, "%s: usage error: %d %s"
              % (argv, p.returncode, p.stderr))
    # After "--" it is an argument: a job id, unknown.
    p = subprocess.run([CTL, "--socket", wd.file("a.sock"), "status", "--", "-h"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 1 and "cannot connect" in p.stderr, "status -- -h: %d %s"
          % (p.returncode, p.stderr))


def ctl_import_progress_total(wd):
    """The progress of an import of a JSON Lines file with lines of blanks
    in it ends at 100%: the rows counted ahead are the rows imported. Lines
    of spaces and tabs were counted as rows, so the last line said, say,
    "2/4 rows (50%)" of a complete import."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    path = wd.file("blanks.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps(avp.text_job(1, to="+15550300001")) + "\n  \n\t\r\n\n")
        f.write(json.dumps(avp.text_job(2, to="+15550300002")) + "\n \t \n")
    p = ctl(d, "--json", "import", path, "--campaign", "blanks")
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 2, "import: %d %s %s"
          % (p.returncode, p.stdout, p.stderr))
    last = p.stderr.strip().splitlines()[-1]
    check(last.startswith("progress: 2/2 rows (100%)"), "the last progress line: %r" % last)
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_jsonl_options(wd):
    """JSON Lines imports take --from and --priority as defaults for what a
    line leaves out (a line's own fields win), and refuse the options that
    only say where a CSV row's fields are (exit 2, nothing submitted). All
    of them were silently ignored: a file imported --priority bulk went at
    normal priority, and a line without a sender was refused."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, {"rate_per_number": 0}).start()
    cl = d.client()
    S0, S1 = avp.SENDERS[0], avp.SENDERS[1]
    bare = avp.text_job(1, to="+15550400001")
    del bare["message"]["phoneNumberId"]
    own_priority = avp.text_job(2, sender=S1, to="+15550400002", priority="high")
    own_sender = avp.text_job(3, sender=S1, to="+15550400003")
    path = wd.file("opts.jsonl")
    with open(path, "w") as f:
        for j in (bare, own_priority, own_sender):
            f.write(json.dumps(j) + "\n")
    for opt in (["--to-column", "phone"], ["--key-column", "k"], ["--text", "hi"],
                ["--from-column", "s"], ["--template", "promo"], ["--param", "p"],
                ["--language", "en"]):
        p = ctl(d, "import", path, "--campaign", "opts", *opt)
        check(p.returncode == 2 and opt[0] in p.stderr and "CSV" in p.stderr,
              "%s with JSON Lines: usage error: %d %s" % (opt, p.returncode, p.stderr))
    check(cl.stats()["counts"].get("queued", 0) + cl.stats()["counts"].get("sent", 0) == 0,
          "nothing submitted by the refused imports")
    p = ctl(d, "--json", "import", path, "--campaign", "opts", "--from", S0, "--priority", "bulk")
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 3, "import: %d %s %s"
          % (p.returncode, p.stdout, p.stderr))
    jobs = cl.request({"op": "list", "campaign": "opts"})["jobs"]
    got = sorted((j["to"], j["phoneNumberId"], j["priority"]) for j in jobs)
    want = [("+15550400001", S0, "bulk"), ("+15550400002", S1, "high"),
            ("+15550400003", S1, "bulk")]
    check(got == want, "defaults where a line has none: %s" % got)
    # A null is no value given, as for "campaign" and "idempotencyKey": the
    # defaults fill it (a null phoneNumberId failed the row, a null priority
    # went at normal).
    nulls = avp.text_job(4, to="+15550400004", priority=None)
    nulls["message"]["phoneNumberId"] = None
    path = wd.file("nulls.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps(nulls) + "\n")
    p = ctl(d, "--json", "import", path, "--campaign", "nulls", "--from", S0, "--priority", "bulk")
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 1, "import of nulls: %d %s %s"
          % (p.returncode, p.stdout, p.stderr))
    jobs = cl.request({"op": "list", "campaign": "nulls"})["jobs"]
    got = [(j["phoneNumberId"], j["priority"]) for j in jobs]
    check(got == [(S0, "bulk")], "defaults where a line has null: %s" % got)
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_report_meta_code_zero(wd):
    """A last error whose Meta code is 0 (Meta's AuthException, which pauses
    the account) reads 0 in the CSV report's metaCode column, as it does in
    `get` and the JSON Lines report: the column was left empty, as for an
    error without a Meta code."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    to = "+15550500001"
    api.control(rules=[{"to": to[1:], "status": 500, "meta": 0}])
    job = cl.request(avp.text_job(1, to=to, campaign="meta0"))["job"]

    def meta_code():
        e = cl.request({"op": "get", "job": job})["job"]["lastError"]
        return e is not None and e["metaCode"] == 0
    wait_for(meta_code, 30, "the job's lastError with metaCode 0")
    p = ctl(d, "report", "--campaign", "meta0")
    check(p.returncode == 0, "report exit %d: %s" % (p.returncode, p.stderr))
    rows = list(csv.DictReader(p.stdout.splitlines()))
    check(len(rows) == 1 and rows[0]["metaCode"] == "0",
          "the CSV report's metaCode: %r" % [r.get("metaCode") for r in rows])
    p = ctl(d, "report", "--campaign", "meta0", "--format", "jsonl")
    check(p.returncode == 0 and json.loads(p.stdout)["error"]["metaCode"] == 0,
          "the JSON Lines report's metaCode: %s" % p.stdout)
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_follow_rate(wd):
    """`campaign --follow` keeps its rate and ETA sane when the campaign
    stops moving or goes back. Paused, the smoothed rate decays towards 0
    and the ETA grew past what an int holds: it read "ETA
    -2147483648:52:16". A retry that requeued finished jobs made the done
    count go down, and the unsigned difference wrapped: a rate of about
    1.8e20/s."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    name = "eta"
    later = time.time() + 3600
    check(cl.request({"op": "pause", "campaign": name}).get("ok") is True, "paused")
    # 20 that fail (and can be retried), 30 that are sent, and 1000 held
    # by notBefore, so that the campaign never finishes while followed.
    api.control(rules=[{"to": "1555%07d" % i, "status": 400, "error": "VALIDATION_ERROR",
                        "message": "bad"} for i in range(20)])
    jobs = [avp.text_job(i, campaign=name) for i in range(50)]
    jobs += [avp.text_job(1000 + i, campaign=name, notBefore=later) for i in range(1000)]
    avp.submit_all(d, jobs)
    f = subprocess.Popen([CTL, "--socket", d.socket, "campaign", name, "--follow", "--interval",
                          "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sample = re.compile(r"eta: (\d+)/(\d+) done .*\| (\d+)/s ETA (--:--|\d+:\d\d(:\d\d)?)$")
    bad = []
    lines = []

    def next_sample():
        line = f.stdout.readline()
        if line == "":
            raise avp.TestFailure("follow ended early: %s" % f.stderr.read())
        lines.append(line.rstrip("\n"))
        m = sample.match(line.rstrip("\n"))
        if m is None or int(m.group(3)) > 100000:
            bad.append(line.rstrip("\n"))
        return int(m.group(1)) if m else -1
    try:
        next_sample()
        check(cl.request({"op": "resume", "campaign": name}).get("ok") is True, "resumed")
        while next_sample() != 50:
            pass
        check(cl.request({"op": "pause", "campaign": name}).get("ok") is True, "paused again")
        # Paused: nothing moves; the rate halves at each sample, and the
        # ETA grows past 2^31 hours within about 50 of them.
        for _ in range(80):
            next_sample()
        # ... and says so: no rate and no ETA while PAUSED (it showed a
        # finite ETA growing from seconds to hours for about 26 samples).
        paused = [ln for ln in lines[-80:] if " PAUSED" in ln]
        check(len(paused) >= 70 and all(ln.endswith("| 0/s ETA --:--") for ln in paused),
              "paused samples show no rate and no ETA: %s" % [ln for ln in paused
                                                              if not ln.endswith("--:--")][:3])
        check(cl.request({"op": "retry", "campaign": name, "state": "failed"})["requeued"] == 20,
              "the 20 failed jobs requeued")
        while next_sample() != 30:
            pass
        for _ in range(5):
            next_sample()
    finally:
        f.kill()
        f.communicate()
    check(not bad, "%d samples with a bad rate or ETA: %s" % (len(bad), bad[:2] + bad[-2:]))
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


class EndlessDaemon:
    """A stand-in for avenpingd on a Unix socket whose campaign has no end:
    every `list` answers a full page and a `next` cursor. It stands for a
    campaign too large to page through in a test. `pages` counts the list
    requests answered."""

    def __init__(self, path):
        self.path = path
        self.pages = 0
        self.ls = socket.socket(socket.AF_UNIX)
        self.ls.bind(path)
        self.ls.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c, c.makefile("rb") as f:
            for line in f:
                req = json.loads(line)
                ans = {"id": req.get("id"), "ok": True}
                if req["op"] == "campaign":
                    ans["campaign"] = {"name": req["campaign"], "total": 10 ** 9,
                                       "counts": {"queued": 10 ** 9}, "paused": False}
                elif req["op"] == "list":
                    after, limit = int(req.get("after") or 0), req.get("limit", 100)
                    ans["jobs"] = [{"id": str(after + i), "state": "queued", "to": "+15550000001",
                                    "phoneNumberId": avp.SENDERS[0], "attempts": 0,
                                    "wamid": None, "lastError": None}
                                   for i in range(1, limit + 1)]
                    ans["next"] = str(after + limit)
                    self.pages += 1
                try:
                    c.sendall((json.dumps(ans) + "\n").encode())
                except OSError:
                    return

    def close(self):
        self.ls.close()


def ctl_report_output_gone(wd):
    """`report` and `list --all` stop paging once their output cannot be
    written: behind `| head -2` (SIGPIPE is ignored) or into a full disk
    they asked for every page of the campaign and wrote it nowhere, and a
    report to a full disk was said to have failed only after the last page.
    Exit 1; a reader that went away is not said, a full disk is."""
    fake = EndlessDaemon(wd.file("endless.sock"))

    def ends(cmd, what):
        p = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise avp.TestFailure("%s still paging after its output failed (%d pages)"
                                  % (what, fake.pages))
        return out, err

    base = "%s --socket %s" % (CTL, fake.path)
    for cmd in ("report --campaign big", "report --campaign big --format jsonl",
                "list --campaign big --all", "--json list --campaign big --all"):
        fake.pages = 0
        out, err = ends("%s %s | head -2" % (base, cmd), cmd)
        check(len(out.splitlines()) == 2 and err == "", "%s | head -2: %r %r" % (cmd, out, err))
        # A pipe holds a page or so before a write fails.
        check(fake.pages < 20, "%s: %d pages asked for after head left" % (cmd, fake.pages))
    fake.pages = 0
    out, err = ends("%s report --campaign big --output /dev/full" % base, "report to /dev/full")
    check("/dev/full: No space left on device" in err and fake.pages < 5,
          "report to /dev/full: %r after %d pages" % (err, fake.pages))
    p = subprocess.run("%s report --campaign big --output /dev/full; echo rc=$?" % base, shell=True,
                       capture_output=True, text=True, timeout=30)
    check(p.stdout.strip() == "rc=1", "exit 1: %s" % p.stdout)
    fake.close()


def ctl_import_progress_tty(wd):
    """On a terminal, a row's message starts a line of its own: the
    progress bar is drawn without a line end, and a refused row's message
    was written after it on its line ("... ETA 0:00 line 25001:
    VALIDATION_ERROR ..."). The bar is erased first, then drawn again."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    path = wd.file("rows.jsonl")
    bad = {25000: "daemon", 28000: "client"}  # 0-based: lines 25001, 28001
    with open(path, "w") as f:
        for i in range(30000):
            job = avp.text_job(i, to="+1557%07d" % i)
            if bad.get(i) == "daemon":
                del job["message"]["to"]  # refused by the daemon: VALIDATION_ERROR
            f.write("not json\n" if bad.get(i) == "client" else json.dumps(job) + "\n")
    master, slave = os.openpty()
    p = subprocess.Popen([CTL, "--socket", d.socket, "import", path, "--campaign", "tty"],
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer of the terminal has gone
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = p.communicate(timeout=60)[0]
    check(p.returncode == 1 and b"30000 rows, 29998 new jobs" in out,
          "import: %d %r" % (p.returncode, out))
    check(b"\r[" in err, "a progress bar was drawn: %r" % err[-300:])
    for msg in (b"line 25001: VALIDATION_ERROR", b"line 28001: not a JSON object"):
        at = err.find(msg)
        check(at >= 0, "%s said: %r" % (msg, err[-300:]))
        before = err[err.rfind(b"\n", 0, at) + 1:at]
        check(before == b"" or before.endswith(b"\r\x1b[K"),
              "%s on a line of its own, got %r before it" % (msg, before[-80:]))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_jsonl_trailing(wd):
    """A JSON Lines line is one object and nothing after it but blanks. Two
    requests that lost the newline between them were imported as the first
    alone, the second dropped without a word (exit 0), and text after an
    object was ignored; the daemon refuses both on its socket. Each such
    line is now reported and not sent; blanks and a CR after the object are
    fine. The same holds for send --message and template --components."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    path = wd.file("trailing.jsonl")
    jobs = [json.dumps(avp.text_job(i, to="+1555040%04d" % i)) for i in range(5)]
    with open(path, "w", newline="") as f:
        f.write(jobs[0] + jobs[1] + "\n")           # line 1: two requests
        f.write(jobs[2] + " trailing text\n")       # line 2: text after it
        f.write(jobs[3] + " \t\r\n")                # line 3: blanks and CR: fine
        f.write(jobs[4] + "\n")                     # line 4: fine
    p = ctl(d, "--json", "import", path, "--campaign", "trailing")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 2 and summary["failed"] == 2,
          "two lines refused, two sent: %d %s %s" % (p.returncode, summary, p.stderr))
    check("line 1: text after the JSON object" in p.stderr
          and "line 2: text after the JSON object" in p.stderr, "named: %s" % p.stderr)
    to = {j["message"]["to"] for j in map(json.loads, jobs[3:])}
    got = {j["to"] for j in ctl_json(d, "list", "--campaign", "trailing")["jobs"]}
    check(got == to, "only lines 3 and 4 became jobs: %s" % got)
    p = ctl(d, "send", "--type", "text", "--message",
            '{"phoneNumberId":"%s","to":"+15550409999","text":"a"} {"x":1}' % avp.SENDERS[0])
    check(p.returncode == 2 and "--message must be a JSON object" in p.stderr,
          "send --message with text after it: %d %s" % (p.returncode, p.stderr))
    p = ctl(d, "template", "--from", avp.SENDERS[0], "--to", "+15550409998", "--name", "promo",
            "--components", "[] []")
    check(p.returncode == 2 and "--components must be a JSON array" in p.stderr,
          "template --components with text after it: %d %s" % (p.returncode, p.stderr))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_write_failed(wd):
    """A row whose request could not be written (the daemon stopped reading:
    EPIPE) counts as failed in the summary; it was left out, so a file of
    one such row read "0 rows, 0 failed". The row is long enough that
    writing it is tried at once, not left in the client's buffer.

    The row is written only once the server has shut its side: the rows
    come through stdin, the header first (read before the client connects),
    the row after the shutdown. With the rows in a file the client could
    connect and write the row into the socket's buffer before the server
    thread got to accept and shutdown; it then waited for an answer until
    the test's 60 s timeout (once under load)."""
    path = wd.file("sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    shut = threading.Event()
    done = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.shutdown(socket.SHUT_RD)  # the client's writes fail from now on
        shut.set()
        done.wait(60)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    p = subprocess.Popen([CTL, "--socket", path, "--json", "import", "-", "--format", "csv",
                          "--campaign", "wf"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wd.procs.append(p)
    p.stdin.write("to,phoneNumberId,text\n")
    p.stdin.flush()
    check(shut.wait(30), "the client connected after reading the header")
    out, err = p.communicate("+15550600001,%s,%s\n" % (avp.SENDERS[0], "x" * 100000),
                             timeout=60)
    done.set()
    t.join(10)
    srv.close()
    summary = json.loads(out)
    check(p.returncode == 1 and "import interrupted" in err, "interrupted: %d %s"
          % (p.returncode, err))
    check(summary["created"] == 0 and summary["failed"] == 1 and summary["rows"] == 1,
          "the row not written counts as failed: %s" % summary)


def ctl_body_as_given(wd):
    """The daemon sends `message` on as given (numbers as spelled, escapes,
    member order, repeated names): so must avenpingctl, for a JSON Lines
    import line ("a request object as on the socket"), send --message and
    template --components. It printed them again with cJSON:
    9007199254740993, 1.0 and 1e400 reached the API as 9.00719925474099e+15,
    1 and null, "caf\\u00e9" as "caf\xc3\xa9"."""
    from test_input import CaptureAPI
    api = CaptureAPI()
    d = avp.Daemon(wd, api.base).start()
    odd = (b'"n":9007199254740993,"f":1.0,"e":1e400,"g":-0,"h":1E+5,'
           b'"s":"caf\\u00e9 \\/","d":1,"d":2')
    lines = [
        # as written; pretty spacing is taken out
        b'{"op":"send","type":"interactive","message":{"phoneNumberId":"1000001",'
        b'"to":"15550700001",' + odd + b'}}',
        b'{ "op" : "send", "type":"smart", "id": 7, "message" : { "phoneNumberId" : "1000001" ,'
        b' "to":"15550700002", "text":"two  spaces" , "z":[ 1 , 2.50 ] } }',
        # --from fills a missing (or null) phoneNumberId; the rest stays as written
        b'{"op":"send","type":"interactive","message":{"to":"15550700003",' + odd + b'}}',
        b'{"op":"send","type":"interactive","message":{"phoneNumberId":null,"to":"15550700004",'
        + odd + b'}}',
    ]
    want = {
        b"15550700001": b'{"phoneNumberId":"1000001","to":"15550700001",' + odd + b'}',
        b"15550700002": b'{"phoneNumberId":"1000001","to":"15550700002","text":"two  spaces",'
                        b'"z":[1,2.50]}',
        b"15550700003": b'{"phoneNumberId":"1000002","to":"15550700003",' + odd + b'}',
        b"15550700004": b'{"phoneNumberId":"1000002","to":"15550700004",' + odd + b'}',
        # send --message: --to replaces the body's field, the rest as written
        b"15550700005": b'{"to":"15550700005","phoneNumberId":"1000001",' + odd + b'}',
        b"15550700006": b'{"phoneNumberId":"1000001","to":"15550700006","templateName":"promo",'
                        b'"language":"en_US","components":[{"type":"body","parameters":'
                        b'[{"type":"text","text":"caf\\u00e9"},{"type":"currency","amount_1000":'
                        b'1.0e3}]}]}',
    }
    path = wd.file("asgiven.jsonl")
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    p = ctl(d, "--json", "import", path, "--campaign", "asgiven", "--from", "1000002")
    check(p.returncode == 0, "import: %d %s" % (p.returncode, p.stderr))
    msg = (b'{"phoneNumberId":"1000001",\n  "to": "15550799999",\n  ' + odd + b'}').decode()
    p = ctl(d, "send", "--type", "interactive", "--to", "15550700005", "--message", msg)
    check(p.returncode == 0, "send --message: %d %s" % (p.returncode, p.stderr))
    p = ctl(d, "template", "--from", "1000001", "--to", "15550700006", "--name", "promo",
            "--components", '[{"type":"body","parameters":[{"type":"text","text":"caf\\u00e9"},'
            '{"type":"currency","amount_1000":1.0e3}]}]')
    check(p.returncode == 0, "template --components: %d %s" % (p.returncode, p.stderr))
    wait_for(lambda: len(api.bodies()) >= len(want), 30, "the bodies at the API")
    got = {}
    for body in api.bodies():
        m = re.search(rb'"to":"(\d+)"', body)
        check(m is not None and m.group(1) not in got, "one send per recipient: %r" % body)
        got[m.group(1)] = body
    check(set(got) == set(want), "every job reached the API: %s" % sorted(got))
    for to in sorted(want):
        check(got[to] == want[to], "body of %s:\n  got  %r\n  want %r" % (to, got[to], want[to]))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_content_keys(wd):
    """Keys derived from a row's content, not its place: a second file
    imported into the same campaign is sent (row-number keys answered its
    rows as duplicates of the first file's and sent none of them, exit 0),
    a row added at the top sends that row alone (it renumbered the others:
    the first file's last row went out twice, the new row never), rows alike
    in one file are all sent, and each import run again sends nothing."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()

    def write(name, rows):
        path = wd.file(name)
        with open(path, "w") as f:
            f.write("to,name\n")
            for to, name_ in rows:
                f.write("%s,%s\n" % (to, name_))
        return path

    def imp(path, camp="S"):
        opts = [] if path.endswith(".jsonl") else ["--from", avp.SENDERS[0], "--text", "Hi {name}"]
        p = ctl(d, "--json", "import", path, "--campaign", camp, *opts)
        check(p.returncode == 0, "import %s: exit %d: %s" % (path, p.returncode, p.stderr))
        return json.loads(p.stdout)

    a = [("+15550000001", "A1"), ("+15550000002", "A2"), ("+15550000003", "A3")]
    b = [("+15550000011", "B1"), ("+15550000012", "B2"), ("+15550000013", "B3")]
    s = imp(write("a.csv", a))
    check(s["created"] == 3, "a.csv: %s" % s)
    s = imp(write("b.csv", b))
    check(s["created"] == 3 and s["duplicates"] == 0, "another file, same campaign: %s" % s)
    s = imp(write("a2.csv", [("+15550000020", "NEW")] + a))
    check(s["created"] == 1 and s["duplicates"] == 3, "a row added at the top: %s" % s)
    same = [("+15550000030", "Twice"), ("+15550000030", "Twice"), ("+15550000031", "Once")]
    s = imp(write("same.csv", same))
    check(s["created"] == 3, "rows alike are all sent: %s" % s)
    for name in ("a.csv", "b.csv", "a2.csv", "same.csv"):
        s = imp(wd.file(name))
        check(s["created"] == 0, "%s again sends nothing: %s" % (name, s))
    # The scheme as the man page states it: content hash, "-2" for the
    # second row alike.
    cl = d.client()
    for key, to in ((content_key("S", ["+15550000030", "Twice"]), "+15550000030"),
                    (content_key("S", ["+15550000030", "Twice"]) + "-2", "+15550000030"),
                    (content_key("S", ["+15550000011", "B1"]), "+15550000011")):
        got = cl.request({"op": "get", "idempotencyKey": key})
        check(got["ok"] and got["job"]["to"] == to, "key %s: %s" % (key, got))
    cl.close()

    # JSON Lines: keyed by the line's content as well.
    def jl(name, tos):
        path = wd.file(name)
        with open(path, "w") as f:
            for i, to in enumerate(tos):
                f.write(json.dumps(avp.text_job(i, to=to)) + "\n")
        return path

    s = imp(jl("a.jsonl", ["+15550000041", "+15550000042"]), "J")
    check(s["created"] == 2, "a.jsonl: %s" % s)
    s = imp(jl("b.jsonl", ["+15550000043", "+15550000044"]), "J")
    check(s["created"] == 2, "another JSON Lines file, same campaign: %s" % s)
    s = imp(wd.file("a.jsonl"), "J")
    check(s["created"] == 0 and s["duplicates"] == 2, "a.jsonl again: %s" % s)

    wait_for(lambda: campaign(d, "S")["counts"].get("sent", 0) == 10
             and campaign(d, "J")["counts"].get("sent", 0) == 4, 60, "all sent")
    texts = collections.Counter(x["body"]["text"] for x in api.sends()
                                if x["body"]["text"].startswith("Hi "))
    want = collections.Counter(["Hi A1", "Hi A2", "Hi A3", "Hi B1", "Hi B2", "Hi B3", "Hi NEW",
                                "Hi Twice", "Hi Twice", "Hi Once"])
    check(texts == want, "each row sent once (rows alike once each): %s" % texts)
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_directory(wd):
    """An import of a directory is refused before anything, with the
    system's word for it, as a file that does not exist is: a directory
    named *.csv was "line 1 (the header): Input/output error", and one
    named *.jsonl a refused line 1 and a summary of one failed row."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    for name in ("dir.csv", "dir.jsonl", "dir"):
        os.mkdir(wd.file(name))
        p = ctl(d, "import", wd.file(name), "--campaign", "D", "--from", avp.SENDERS[0])
        check(p.returncode == 1 and p.stdout == ""
              and p.stderr == "avenpingctl: %s: Is a directory\n" % wd.file(name),
              "import of directory %s: %d %r %r" % (name, p.returncode, p.stdout, p.stderr))
    check(ctl(d, "campaign", "D").returncode == 1, "no job submitted")
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_row_lines(wd):
    """A refused CSV row is named with its line in the file as well as its
    row number, whoever refused it: the header, blank lines and a quoted
    field's line ends take lines but no row number, so "row 5" alone (the
    daemon's refusals, and the client's own: no recipient, a repeated key)
    sent a reader with an editor or sed to another row. --json lists the
    line too; JSON Lines rows are their lines and are named so, as
    before."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    path = wd.file("lines.csv")
    with open(path, "w") as f:
        f.write("to,text,ref\n"                 # line 1: the header
                "\n"                            # line 2: blank, no row
                "+15550000001,\"two\nlines\",k1\n"  # row 1, lines 3-4
                "+15550000002,fine,k2\n"         # row 2, line 5
                ",no recipient,k3\n"             # row 3, line 6
                "+15550000004,again,k2\n"        # row 4, line 7: k2 repeated
                "no digits,daemon says no,k5\n"  # row 5, line 8: VALIDATION_ERROR
                "+15550000006,one,too,many\n")   # row 6, line 9: 4 fields
    p = ctl(d, "--json", "import", path, "--campaign", "L", "--from", avp.SENDERS[0],
            "--key-column", "ref")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and summary["created"] == 2 and summary["failed"] == 4,
          "two rows sent, four refused: %s %s" % (summary, p.stderr))
    for want in ("row 3: line 6: missing recipient",
                 'row 4: line 7: idempotency key "L:k2" is row 2\'s too',
                 "row 5: line 8: VALIDATION_ERROR: message.to",
                 "row 6: line 9: 4 fields where the header has 3"):
        check(want in p.stderr, "%r in: %s" % (want, p.stderr))
    listed = sorted((r["row"], r.get("line"), r.get("error")) for r in summary["refusedRows"])
    check(listed == [(3, 6, None), (4, 7, None), (5, 8, "VALIDATION_ERROR"), (6, 9, None)],
          "refusedRows with their lines: %s" % summary["refusedRows"])
    # JSON Lines: the row is the line; no "line" beside it.
    jl = wd.file("lines.jsonl")
    with open(jl, "w") as f:
        f.write(json.dumps(avp.text_job(1, to="+15550000011")) + "\n\nnot json\n")
    p = ctl(d, "--json", "import", jl, "--campaign", "LJ")
    summary = json.loads(p.stdout)
    check(p.returncode == 1 and "line 3: not a JSON object" in p.stderr and "row 3" not in p.stderr
          and summary["refusedRows"] == [{"row": 3, "message": "not a JSON object"}],
          "a JSON Lines row named by its line: %s %s" % (summary, p.stderr))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_error_text(wd):
    """A job's last error as status, list and watch print it: with its HTTP
    status and Meta's code when the API answered ("500 INTERNAL_ERROR: ...
    (Meta 131000)"), without a status when no answer came: it read
    "0 CONNECT_ERROR", an HTTP status that does not exist."""
    api = avp.FakeAPI(wd, "--fail-rate", "1", "--fail-meta-code", "131000")
    d = avp.Daemon(wd, api.base).start()
    j = ctl_json(d, "send", "--from", avp.SENDERS[0], "--to", "+15550000001", "--text", "x",
                 "--campaign", "E", "--max-attempts", "1")["job"]
    wait_for(lambda: ctl_json(d, "status", j)["job"]["state"] == "failed", 30, "the job failed")
    p = ctl(d, "status", j)
    check(p.returncode == 0 and re.search(r"last error: 500 INTERNAL_ERROR: .*\(Meta 131000\)\n",
                                          p.stdout), "an API error: %s" % p.stdout)
    p = ctl(d, "list", "--campaign", "E")
    check(p.returncode == 0 and "  500 INTERNAL_ERROR: " in p.stdout and "(Meta 131000)"
          in p.stdout, "an API error listed: %s" % p.stdout)
    # No API: nothing answers, no status.
    api.stop()
    watch = subprocess.Popen([CTL, "--socket", d.socket, "watch", "--campaign", "E2", "--count",
                              "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: ctl_json(d, "stats")["stats"]["connections"] >= 2, 10, "the watcher")
    j = ctl_json(d, "send", "--from", avp.SENDERS[0], "--to", "+15550000002", "--text", "y",
                 "--campaign", "E2")["job"]
    wait_for(lambda: ctl_json(d, "status", j)["job"]["lastError"], 30, "a failed attempt")
    check(ctl_json(d, "status", j)["job"]["lastError"]["code"] == "CONNECT_ERROR",
          "CONNECT_ERROR: %s" % ctl_json(d, "status", j))
    p = ctl(d, "status", j)
    check(p.returncode == 0 and "  last error: CONNECT_ERROR: " in p.stdout,
          "no status without an answer: %s" % p.stdout)
    p = ctl(d, "list", "--campaign", "E2")
    check(p.returncode == 0 and "  CONNECT_ERROR: " in p.stdout and " 0 CONNECT_ERROR" not in
          p.stdout, "listed without a status: %s" % p.stdout)
    out, err = watch.communicate(timeout=30)
    check(watch.returncode == 0 and " error CONNECT_ERROR: " in out and " error 0 " not in out,
          "watched without a status: %d %s %s" % (watch.returncode, out, err))
    check(d.stop() == 0, "SIGTERM exits 0")


def ctl_status_times(wd):
    """status shows when a waiting job goes next and when it expires (a
    job held by --not-before read "queued" and nothing said until when);
    a finished job shows neither."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    later = int(time.time()) + 3600
    j = ctl_json(d, "send", "--from", avp.SENDERS[0], "--to", "+15550000001", "--text", "x",
                 "--not-before", str(later), "--expires-at", str(later + 7200))["job"]

    def local(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    p = ctl(d, "status", j)
    want = "  next attempt %s, expires %s\n" % (local(later), local(later + 7200))
    check(p.returncode == 0 and "queued" in p.stdout and want in p.stdout,
          "a scheduled job's times, %r in: %s" % (want, p.stdout))
    j = ctl_json(d, "send", "--from", avp.SENDERS[0], "--to", "+15550000002", "--text", "y")["job"]
    wait_for(lambda: ctl_json(d, "status", j)["job"]["state"] == "sent", 30, "the send")
    p = ctl(d, "status", j)
    check(p.returncode == 0 and "next attempt" not in p.stdout, "a sent job: %s" % p.stdout)
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_stats_account_until(wd):
    """stats says until when a throttled account waits (Graph throttling:
    all sending waits 5 minutes); it said only that it waited."""
    api = avp.FakeAPI(wd, "--fail-rate", "1", "--fail-meta-code", "80007")
    d = avp.Daemon(wd, api.base).start()
    ctl_json(d, "send", "--from", avp.SENDERS[0], "--to", "+15550000001", "--text", "x")
    acct = wait_for(lambda: (lambda a: a if a["state"] == "throttled" else None)(
        ctl_json(d, "stats")["stats"]["account"]), 30, "the account throttled")
    p = ctl(d, "stats")
    want = "(until %s)\n" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(acct["until"])))
    check(p.returncode == 0 and "account: throttled - " in p.stdout and want in p.stdout,
          "%r in: %s" % (want, p.stdout))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_import_from_default(wd):
    """CSV: the sender is the row's phoneNumberId cell, and --from for the
    rows without one (as --from is the default of a JSON Lines line), as
    the man page and the usage say (the usage read "--from ID |
    --from-column COL", as if they excluded each other)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    path = wd.file("senders.csv")
    with open(path, "w") as f:
        f.write("to,phoneNumberId,text\n+15550000001,%s,own\n+15550000002,,default\n"
                % avp.SENDERS[1])
    p = ctl(d, "--json", "import", path, "--campaign", "F", "--from", avp.SENDERS[0])
    check(p.returncode == 0 and json.loads(p.stdout)["created"] == 2, "import: %d %s %s"
          % (p.returncode, p.stdout, p.stderr))
    wait_for(lambda: campaign(d, "F")["counts"].get("sent", 0) == 2, 30, "both sent")
    got = sorted((x["body"]["text"], x["phoneNumberId"]) for x in api.sends())
    check(got == [("default", avp.SENDERS[0]), ("own", avp.SENDERS[1])], "senders: %s" % got)
    p = ctl(d, "import", "--help")
    check("[--from ID] [--from-column COL]" in p.stdout, "usage: %s" % p.stdout[:200])
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def ctl_json_numbers(wd):
    """--json prints the daemon's numbers as it wrote them: a time of
    fractional seconds came out with 17 digits (4000003600.654321 as
    4000003600.6543212: cJSON's spelling when 15 digits do not hold it),
    in status, list and report alike."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    a = cl.request({"op": "send", "type": "text", "campaign": "N", "notBefore": 4000000000.123456,
                    "expiresAt": 4000003600.654321,
                    "message": {"phoneNumberId": avp.SENDERS[0], "to": "+15550000001",
                                "text": "x"}})
    check(a["ok"], "submit: %s" % a)
    job = a["job"]
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(d.socket)
    raw.sendall(b'{"op":"get","job":"%s"}\n' % job.encode())
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = raw.recv(1 << 16)
        check(chunk, "the get was answered")
        answer += chunk
    raw.close()

    def times(text, *keys):
        return [re.search(r'"%s":([-0-9.eE+]+)' % k, text).group(1) for k in keys]

    keys = ("createdAt", "updatedAt", "nextAttemptAt", "expiresAt")
    want = times(answer.decode(), *keys)
    check(want[2:] == ["4000000000.123456", "4000003600.654321"], "the daemon's get: %s" % answer)
    for args in (("status", job), ("list", "--campaign", "N"), ("list", "--campaign", "N", "--all")):
        p = ctl(d, "--json", *args)
        check(p.returncode == 0 and times(p.stdout, *keys) == want,
              "%s: %s, the daemon's %s" % (" ".join(args), p.stdout, want))
    p = ctl(d, "report", "--campaign", "N", "--format", "jsonl")
    check(p.returncode == 0 and times(p.stdout, "updatedAt") == want[1:2],
          "report: %s, the daemon's %s" % (p.stdout, want[1]))
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


CASES = {f.__name__: f for f in (ctl_campaign, ctl_import_queue_full, ctl_metrics, ctl_usage, ctl_import_edges,
                                 ctl_import_long_lines, ctl_import_formats,
                                 ctl_output_gone, ctl_send_message,
                                 ctl_options_after_command, ctl_import_progress_total,
                                 ctl_import_jsonl_options, ctl_report_meta_code_zero,
                                 ctl_follow_rate, ctl_report_output_gone,
                                 ctl_import_progress_tty, ctl_import_jsonl_trailing,
                                 ctl_import_write_failed, ctl_body_as_given,
                                 ctl_import_content_keys, ctl_import_directory,
                                 ctl_import_row_lines, ctl_error_text,
                                 ctl_status_times, ctl_stats_account_until,
                                 ctl_import_from_default, ctl_json_numbers)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: test_ctl.py {%s}" % "|".join(CASES))
        sys.exit(2)
    avp.run(CASES[sys.argv[1]])
