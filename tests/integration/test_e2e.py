#!/usr/bin/env python3
"""End-to-end tests: socket -> LMDB -> libcurl multi on libuv -> fake v2 API.

Each case starts real processes and judges from the fake API's send log.
Usage: test_e2e.py CASE   (see CASES at the bottom)
"""
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import avp  # noqa: E402
from avp import (check, count_markers, submit_all, unfinished,  # noqa: E402
                 wait_all_final, wait_for)


def jobs_mixed(n, start=0):
    return [avp.text_job(i) if i % 2 == 0 else avp.template_job(i) for i in range(start, start + n)]


def e2e_10k(wd):
    """10,000 jobs over 5 senders all reach `sent`; the API saw each once."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    n = 10000
    jobs = jobs_mixed(n)
    ids = submit_all(d, jobs)
    cl = d.client()
    st = wait_all_final(cl, 180)
    check(st["counts"]["sent"] == n, "sent == %d: %s" % (n, st["counts"]))
    sends = api.sends()
    seen = count_markers(sends)
    check(len(sends) == n, "the API accepted exactly %d sends, got %d" % (n, len(sends)))
    check(set(seen) == {"job-%d" % i for i in range(n)}, "every job reached the API")
    check(max(seen.values()) == 1, "no job sent twice")
    per_sender = collections.Counter(s["phoneNumberId"] for s in sends)
    check(all(per_sender[p] == n // 5 for p in avp.SENDERS), "per sender: %s" % per_sender)
    routes = collections.Counter(s["route"] for s in sends)
    check(routes == {"/v2/messages/send/text": n // 2, "/v2/templates/send": n // 2},
          "routes: %s" % routes)
    # The store's answers agree with the API's log: state and wamid per job.
    wamid_of = {avp.marker(s): s["wamid"] for s in sends}
    answers = cl.pipeline([{"op": "get", "job": i} for i in ids])
    for i, a in enumerate(answers):
        j = a["job"]
        check(j["state"] == "sent", "job %s state %s" % (j["id"], j["state"]))
        check(j["wamid"] == wamid_of["job-%d" % i], "job %s wamid matches the API's" % j["id"])
        check(j["attempts"] == 1, "one attempt each")
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def faults_500(wd):
    """With 10% injected 500s (Meta 131000) every job still ends `sent`, once."""
    api = avp.FakeAPI(wd, "--fail-rate", "0.1", "--fail-meta-code", "131000")
    d = avp.Daemon(wd, api.base, {"max_attempts": 50}).start()
    n = 3000
    ids = submit_all(d, jobs_mixed(n))
    cl = d.client()
    st = wait_all_final(cl, 180)
    check(st["counts"]["sent"] == n, "all sent: %s" % st["counts"])
    fstats = api.stats()
    check(fstats["by_status"].get("500", 0) >= n * 0.05,
          "the fault was injected: %s" % fstats["by_status"])
    seen = count_markers(api.sends())
    check(len(seen) == n, "each job accepted")
    # No resets are injected, so a second acceptance of a job can only come
    # from a transfer that failed after its request left (the daemon counts
    # those as possible duplicates; the API has no idempotency key).
    dups = sum(c - 1 for c in seen.values())
    maybe = cl.stats()["possibleDuplicates"]
    check(dups <= maybe, "duplicates (%d) only after transfers that may have left (%d)"
          % (dups, maybe))
    if dups:
        print("faults_500: %d duplicates after %d possibly-sent transfer failures" % (dups, maybe))
    answers = cl.pipeline([{"op": "get", "job": i} for i in ids])
    retried = [a["job"] for a in answers if a["job"]["attempts"] > 1]
    check(retried, "some jobs needed more than one attempt")
    check(all(j["lastError"] is None or j["lastError"]["metaCode"] in (None, 131000)
              for j in retried), "last error carries Meta's code")
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def kill9(wd):
    """kill -9 in the middle of a 20,000-job run, restart on the same state:
    every acknowledged job ends `sent`; duplicates only among jobs the store
    showed in flight."""
    api = avp.FakeAPI(wd, "--latency-ms", "1")
    cfg = {"max_inflight": 64}
    d = avp.Daemon(wd, api.base, cfg).start()
    n = 20000
    jobs = jobs_mixed(n)
    acked = []

    def submitter():
        cl = d.client()
        answers = cl.pipeline(jobs, window=500)
        acked.extend((i, a["job"]) for i, a in enumerate(answers) if a.get("ok"))

    t = threading.Thread(target=submitter)
    t.start()
    wait_for(lambda: api.stats()["accepted"] >= 3000, 120, "3,000 sends before the kill")
    d.kill9()
    t.join(60)
    check(not t.is_alive(), "submitter ended with the daemon")
    check(len(acked) >= 3000, "some jobs acknowledged before the kill (%d)" % len(acked))
    before = len(api.sends())

    d2 = avp.Daemon(wd, api.base, cfg, state_dir=d.state_dir, name="daemon2").start()
    cl = d2.client()
    wait_all_final(cl, 240)
    sends = api.sends()
    seen = count_markers(sends)
    missing = [i for i, _ in acked if seen["job-%d" % i] == 0]
    check(not missing, "%d acknowledged jobs never sent, e.g. %s" % (len(missing), missing[:5]))
    answers = cl.pipeline([{"op": "get", "job": j} for _, j in acked])
    states = collections.Counter(a["job"]["state"] for a in answers)
    check(states == {"sent": len(acked)}, "acknowledged jobs all sent: %s" % states)
    dups = sum(c - 1 for c in seen.values() if c > 1)
    log = d2.stderr()
    recovered = 0
    for line in log.splitlines():
        m = re.search(r"(\d+) jobs were in flight at the last stop", line)
        if m:
            recovered = int(m.group(1))
    check(dups <= recovered, "duplicates (%d) only among jobs in flight at the kill (%d)"
          % (dups, recovered))
    # The scheduler hands out up to max_inflight + DISPATCH_AHEAD (2048)
    # jobs (their `sending` commits overlap the requests); the store shows
    # `sending` for those and for the ones whose outcome is in the next
    # commit: at most twice that.
    check(recovered <= (cfg["max_inflight"] + 2048) * 2, "in-flight bound: %d" % recovered)
    print("kill9: %d acked, %d sent before kill, %d recovered in flight, %d duplicates"
          % (len(acked), before, recovered, dups))
    cl.close()
    check(d2.stop() == 0, "SIGTERM exits 0")
    api.stop()


def protocol_errors(wd):
    """Bad lines get the right error codes; the connection stays usable."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()

    def ask(raw):
        cl.send_raw(raw.encode() + b"\n")
        return cl.read_line()

    cases = [
        ("not json", "BAD_REQUEST", None),
        ("[1,2,3]", "BAD_REQUEST", None),
        ('{"id":7}', "VALIDATION_ERROR", "op"),
        ('{"id":8,"op":"frobnicate"}', "VALIDATION_ERROR", "frobnicate"),
        ('{"id":9,"op":"send","type":"text"}', "VALIDATION_ERROR", "message"),
        ('{"id":10,"op":"send","type":"fax","message":{"phoneNumberId":"1000001","to":"1","text":"x"}}',
         "VALIDATION_ERROR", "type"),
        ('{"id":11,"op":"send","type":"text","message":{"to":"15551234567","text":"x"}}',
         "VALIDATION_ERROR", "phoneNumberId"),
        ('{"id":12,"op":"send","type":"text","message":{"phoneNumberId":"1000001","text":"x"}}',
         "VALIDATION_ERROR", "to"),
        ('{"id":13,"op":"send","type":"text","message":{"phoneNumberId":"1000001","to":"155"}}',
         "VALIDATION_ERROR", "text"),
        ('{"id":14,"op":"send","type":"media","message":{"phoneNumberId":"1000001","to":"155","media":{"type":"image"}}}',
         "VALIDATION_ERROR", "mediaId"),
        ('{"id":15,"op":"template_send","message":{"phoneNumberId":"1000001","to":"155"}}',
         "VALIDATION_ERROR", "templateName"),
        ('{"id":16,"op":"get","job":"999999"}', "NOT_FOUND", None),
        ('{"id":17,"op":"send","type":"text","priority":"urgent","message":{"phoneNumberId":"1000001","to":"155","text":"x"}}',
         "VALIDATION_ERROR", "priority"),
        ('{"id":18,"op":"send","type":"text","idempotencyKey":"' + "k" * 201 +
         '","message":{"phoneNumberId":"1000001","to":"155","text":"x"}}',
         "VALIDATION_ERROR", "idempotencyKey"),
        ('{"id":' + "[" * 100 + "]" * 100 + '}', "BAD_REQUEST", None),
    ]
    for raw, code, word in cases:
        a = ask(raw)
        check(a.get("ok") is False and a.get("error") == code,
              "%r -> %s, got %s" % (raw[:60], code, a))
        check(isinstance(a.get("message"), str) and a["message"], "a message for %r" % raw[:40])
        if word:
            check(word in a["message"], "message for %r names %r: %s" % (raw[:40], word, a["message"]))
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "id" in parsed and code != "BAD_REQUEST":
            check(a.get("id") == parsed["id"], "id echoed for %r: %s" % (raw[:30], a))
    # Still usable: a good request on the same connection.
    a = cl.request({"op": "ping"})
    check(a["ok"] and a["version"], "ping after errors: %s" % a)
    a = cl.request(avp.text_job(1))
    check(a["ok"] and a["duplicate"] is False, "a send after errors: %s" % a)
    # Pipelined requests come back in order with their ids.
    cl.send_raw(b"".join(b'{"op":"ping","id":"p%d"}\n' % i for i in range(100)))
    got = [cl.read_line()["id"] for _ in range(100)]
    check(got == ["p%d" % i for i in range(100)], "pipelined answers in order")
    # A body over 2 MB is refused by name.
    big = avp.text_job(2)
    big["message"]["text"] = "x" * 2100000
    a = cl.request(big)
    check(a["error"] == "VALIDATION_ERROR" and "message" in a["message"], "2 MB bound: %s" % a)
    # A line over 4 MiB: BAD_REQUEST, then the connection is closed.
    try:
        cl.send_raw(b'{"op":"ping","pad":"' + b"y" * (4 * 1024 * 1024 + 10) + b'"}\n')
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before it read all of it
    a = cl.read_line()
    check(a["error"] == "BAD_REQUEST", "over-long line: %s" % a)
    try:
        cl.read_line(timeout=10)
        check(False, "connection closed after an over-long line")
    except (EOFError, ConnectionError):
        pass
    cl.close()
    # ... and the daemon still serves others.
    cl2 = d.client()
    check(cl2.request({"op": "ping"})["ok"], "daemon alive after the over-long line")
    st = cl2.stats()
    check(st["counts"]["queued"] + st["counts"]["sending"] + st["counts"]["sent"] == 1,
          "only the one good job was accepted: %s" % st["counts"])
    cl2.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def startup_errors(wd):
    """No token: one clear line, non-zero exit. Two daemons on one state dir:
    the second refuses."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, name="notoken")
    os.unlink(d.token_file)
    # Config names a missing token file: must fail, naming the file.
    d.start(wait=False)
    rc = d.proc.wait(15)
    err = d.stderr().strip().splitlines()
    check(rc != 0, "exit non-zero without a token")
    check(len(err) == 1 and "token" in err[0], "one clear line: %s" % err)
    # Plain text on a file or a terminal; the sd-daemon priority prefix only
    # when stderr is the journal's stream ($JOURNAL_STREAM names its device
    # and inode). It was "<3>avenpingd: ..." everywhere.
    check(err[0].startswith("avenpingd: token file "), "no prefix off the journal: %s" % err)
    for journal in (True, False):
        path = wd.file("journal-%s.err" % journal)
        with open(path, "w") as f:
            st = os.fstat(f.fileno()) if journal else os.stat(d.config)
            env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
            env.pop("AVENPING_TOKEN", None)
            env.pop("CREDENTIALS_DIRECTORY", None)
            rc = subprocess.run([avp.DAEMON, "--config", d.config], stderr=f, env=env,
                                timeout=15).returncode
        with open(path) as f:
            line = f.read()
        want = "<3>avenpingd: " if journal else "avenpingd: "
        check(rc != 0 and line.startswith(want) and "token" in line,
              "JOURNAL_STREAM %s stderr: %r" % ("is" if journal else "is not", line))
    # Token from the environment works; and it never shows in argv or logs.
    d1 = avp.Daemon(wd, api.base, name="first")
    cfg = open(d1.config).read().replace("token_file = %s\n" % d1.token_file, "")
    open(d1.config, "w").write(cfg)
    d1.env["AVENPING_TOKEN"] = avp.TOKEN
    d1.start()
    cl = d1.client()
    a = cl.request(avp.text_job(1))
    check(a["ok"], "send with token from env")
    wait_for(lambda: cl.stats()["counts"]["sent"] == 1, 30, "the job sent")
    cmdline = open("/proc/%d/cmdline" % d1.proc.pid, "rb").read()
    check(avp.TOKEN.encode() not in cmdline, "token not in argv")
    limits = open("/proc/%d/limits" % d1.proc.pid).read()
    check(re.search(r"Max core file size\s+0\s+0\s", limits) is not None,
          "no core dumps (the token would be in one): %s"
          % [l for l in limits.splitlines() if "core" in l])
    # Second daemon, same state dir, other socket: refused.
    d2 = avp.Daemon(wd, api.base, {"socket": wd.file("other.sock")}, state_dir=d1.state_dir,
                    name="second")
    d2.start(wait=False)
    rc2 = d2.proc.wait(15)
    check(rc2 != 0, "second daemon on the same state dir exits non-zero")
    check("in use" in d2.stderr(), "says why: %s" % d2.stderr())
    check(cl.request({"op": "ping"})["ok"], "first daemon unaffected")
    # Second daemon, same socket, a state dir of its own: refused before it
    # creates anything there.
    fresh = wd.file("fresh-state")
    d4 = avp.Daemon(wd, api.base, {"socket": d1.socket}, state_dir=fresh, name="fourth")
    d4.start(wait=False)
    check(d4.proc.wait(15) != 0, "second daemon on a busy socket exits non-zero")
    check("another process listens on it" in d4.stderr(), "says why: %s" % d4.stderr())
    check(os.path.exists(d1.socket + ".lock"), "the first daemon holds its socket's lock file")
    check(not os.path.exists(fresh), "no state dir left behind: %s"
          % (os.listdir(fresh) if os.path.isdir(fresh) else fresh))
    check(cl.request({"op": "ping"})["ok"], "first daemon still answers on its socket")
    # A socket inside a state dir that does not exist yet: the dir is made
    # first (the socket is bound before the store is opened).
    inner = wd.file("inner-state")
    d5 = avp.Daemon(wd, api.base, {"socket": os.path.join(inner, "s.sock")}, state_dir=inner,
                    name="fifth")
    d5.socket = os.path.join(inner, "s.sock")
    d5.start()
    c5 = d5.client()
    check(c5.request({"op": "ping"})["ok"], "a daemon with its socket in its new state dir")
    c5.close()
    check(d5.stop() == 0, "SIGTERM exits 0")
    # Directories missing above the socket and the state dir are made, as
    # for the default /run/avenpingd outside systemd (both refused to start:
    # "No such file or directory").
    deep_sock = wd.file("run/avenpingd/s.sock")
    deep_state = wd.file("var/lib/avenpingd")
    d6 = avp.Daemon(wd, api.base, {"socket": deep_sock}, state_dir=deep_state, name="sixth")
    d6.socket = deep_sock
    old_umask = os.umask(0o077)  # the daemon inherits it (systemd's UMask=0077)
    try:
        d6.start()
    finally:
        os.umask(old_umask)
    c6 = d6.client()
    check(c6.request({"op": "ping"})["ok"], "a daemon whose socket and state dirs were missing")
    c6.close()
    check(os.stat(deep_state).st_mode & 0o777 == 0o700, "the state dir is 0700")
    for made in (wd.file("run"), wd.file("run/avenpingd"), wd.file("var"), wd.file("var/lib")):
        check(os.stat(made).st_mode & 0o777 == 0o755, "%s made 0755 under umask 077" % made)
    check(d6.stop() == 0, "SIGTERM exits 0")
    cl.close()
    check(d1.stop() == 0, "SIGTERM exits 0")
    check(not os.path.exists(d1.socket) and not os.path.exists(d1.socket + ".lock"),
          "a clean stop leaves neither the socket nor its lock file")
    check(avp.TOKEN not in d1.stderr(), "token never logged")
    # A regular file where the socket goes: named as such, and left alone.
    regular = wd.file("regular")
    with open(regular, "w") as f:
        f.write("keep me\n")
    d3 = avp.Daemon(wd, api.base, {"socket": regular}, name="third")
    d3.start(wait=False)
    check(d3.proc.wait(15) != 0, "a file in the socket's place: exits non-zero")
    check("not a socket is in the way" in d3.stderr(), "says why: %s" % d3.stderr())
    check(open(regular).read() == "keep me\n", "the file is left alone")
    # Bad config: file, line and key named.
    bad = avp.Daemon(wd, api.base, {"rate_per_numbr": 5}, name="badcfg")
    bad.start(wait=False)
    check(bad.proc.wait(15) != 0, "unknown key refused")
    check("badcfg.conf:" in bad.stderr() and "rate_per_numbr" in bad.stderr(),
          "names file, line, key: %s" % bad.stderr())
    # A ca_file that cannot be read: refused at start, naming the key (it
    # was accepted, and every TLS send failed and was retried until its job
    # expired, with nothing logged).
    noca = avp.Daemon(wd, api.base, {"ca_file": wd.file("missing-ca.pem")}, name="noca")
    noca.start(wait=False)
    check(noca.proc.wait(15) != 0, "a missing ca_file refused")
    err = noca.stderr().strip().splitlines()
    check(len(err) == 1 and "ca_file" in err[0] and "missing-ca.pem" in err[0]
          and "noca.conf" in err[0], "one line naming the file and the key: %s" % err)
    api.stop()


def sigterm_at_start(wd):
    """A SIGTERM as soon as the socket exists (the store may still be
    recovering): the daemon stops cleanly, exit 0, and leaves no socket.
    The signals were caught only once everything had started, and the
    socket is bound before the store is opened."""
    api = avp.FakeAPI(wd)
    for i in range(10):
        d = avp.Daemon(wd, api.base, {}, name="d%d" % i).start(wait=False)
        deadline = time.monotonic() + 15
        while not os.path.exists(d.socket):  # polled tightly: the window is short
            check(time.monotonic() < deadline and d.proc.poll() is None, "the socket")
            time.sleep(0.0002)
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(15)
        check(rc == 0, "exit 0 after a SIGTERM at start, got %s: %s" % (rc, d.stderr()))
        check(not os.path.exists(d.socket), "socket removed")
        check(not os.path.exists(d.socket + ".lock"), "lock file removed")
    api.stop()


def sigterm_inflight(wd):
    """SIGTERM with requests in flight: they finish, the daemon exits 0, and
    nothing acknowledged is lost across the restart."""
    api = avp.FakeAPI(wd, "--latency-ms", "300")
    cfg = {"max_inflight": 8}
    d = avp.Daemon(wd, api.base, cfg).start()
    ids = submit_all(d, jobs_mixed(200))
    wait_for(lambda: api.stats()["requests"] >= 8, 30, "requests in flight")
    t0 = time.monotonic()
    rc = d.stop()
    check(rc == 0, "exit 0 after SIGTERM, got %s" % rc)
    check(time.monotonic() - t0 < 10, "stopped within the bound")
    d2 = avp.Daemon(wd, api.base, cfg, state_dir=d.state_dir, name="daemon2").start()
    api.control(latency_ms=0)
    cl = d2.client()
    wait_all_final(cl, 60)
    answers = cl.pipeline([{"op": "get", "job": i} for i in ids])
    check(all(a["job"]["state"] == "sent" for a in answers), "all sent after restart")
    seen = count_markers(api.sends())
    check(len(seen) == 200, "every job reached the API")
    check(sum(c - 1 for c in seen.values()) == 0, "no duplicates after a clean stop")
    cl.close()
    check(d2.stop() == 0, "exit 0")
    api.stop()


def sigterm_twice(wd):
    """A second SIGTERM while the first waits for requests in flight stops
    at once (Ctrl-C twice): they are cancelled, the daemon exits 0 well
    before shutdown_timeout_ms, and the jobs are sent after a restart."""
    api = avp.FakeAPI(wd, "--latency-ms", "20000")
    cfg = {"max_inflight": 8, "shutdown_timeout_ms": 30000}
    d = avp.Daemon(wd, api.base, cfg).start()
    ids = submit_all(d, jobs_mixed(20))
    wait_for(lambda: api.stats()["requests"] >= 8, 30, "requests in flight")
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping (" in d.stderr(), 10, "the first SIGTERM taken")
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(15)
    check(rc == 0, "exit 0 after two SIGTERMs, got %s" % rc)
    check(time.monotonic() - t0 < 10, "stopped at the second signal: %.1fs" % (time.monotonic() - t0))
    check("SIGTERM again: cancelling" in d.stderr(), "the second signal logged")
    api.control(latency_ms=0)
    d2 = avp.Daemon(wd, api.base, cfg, state_dir=d.state_dir, name="daemon2").start()
    cl = d2.client()
    wait_all_final(cl, 60)
    answers = cl.pipeline([{"op": "get", "job": i} for i in ids])
    check(all(a["job"]["state"] == "sent" for a in answers), "all sent after restart")
    cl.close()
    check(d2.stop() == 0, "exit 0")
    api.stop()


def sigterm_during_flush(wd):
    """A second SIGTERM while the stop writes its last commit (a slow disk)
    is answered in the log: the store is still being written and the daemon
    exits once it is. It was taken silently, so an operator pressing Ctrl-C
    again saw nothing and reached for kill -9."""
    api = avp.FakeAPI(wd)
    faults = avp.Faults(wd)
    d = avp.Daemon(wd, api.base, env=faults.env()).start()
    cl, probe = d.client(), d.client()
    check(cl.request({"op": "pause", "all": True}).get("ok") is True, "paused")
    faults.set("sync SLOW 2000")  # every commit takes 2 s from here on
    cl.send_raw((json.dumps(dict(avp.text_job(1), id=1)) + "\n").encode())
    wait_for(lambda: probe.stats()["commitBacklog"] > 0, 10, "the submit's commit pending")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping (" in d.stderr(), 10, "the first SIGTERM taken")
    d.proc.send_signal(signal.SIGTERM)
    check(cl.read_line(10).get("ok") is True, "the submit acknowledged")
    rc = d.proc.wait(30)
    check(rc == 0, "exit 0, got %s" % rc)
    check("SIGTERM again: the store is being written" in d.stderr(),
          "the second signal during the flush is logged: %s" % d.stderr()[-400:])
    api.stop()


def sigterm_answers_submits(wd):
    """SIGTERM with thousands of submits on their way to the store: every
    submit is answered before the connection closes (acknowledged, or
    SHUTTING_DOWN), and the store holds exactly the acknowledged jobs. Before,
    the connections were closed as the last commit's answers were written
    into their buffers: jobs stored, their clients told nothing (0 of 4,000
    answered in two runs of three)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    check(cl.request({"op": "pause", "all": True}).get("ok") is True, "paused")
    n = 4000
    cl.send_raw("".join(json.dumps(dict(avp.text_job(i), id=i)) + "\n" for i in range(n)).encode())
    d.proc.send_signal(signal.SIGTERM)
    answers = []
    try:
        while True:
            answers.append(cl.read_line(30))
    except EOFError:
        pass
    check(d.proc.wait(30) == 0, "exit 0")
    acked = [a for a in answers if a.get("ok") is True]
    refused = [a for a in answers if a.get("error") == "SHUTTING_DOWN"]
    print("%d answers: %d acknowledged, %d SHUTTING_DOWN" % (len(answers), len(acked), len(refused)))
    check(len(answers) == n and len(acked) + len(refused) == n,
          "every submit answered: %d of %d (%d acknowledged, %d refused)"
          % (len(answers), n, len(acked), len(refused)))
    check([a["id"] for a in answers] == list(range(n)), "answers in request order")
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon2").start()
    cl2 = d2.client()
    counts = cl2.stats()["counts"]
    check(sum(counts.values()) == len(acked), "the store holds the %d acknowledged jobs: %s"
          % (len(acked), counts))
    got = cl2.pipeline([{"op": "get", "job": a["job"]} for a in acked])
    check(all(g.get("ok") for g in got), "each acknowledged job is stored")
    cl2.close()
    check(d2.stop() == 0, "exit 0")
    api.stop()


def permanent_errors(wd):
    """400/404 answers fail the job with the error stored; no retries."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    api.control(rules=[{"to": "15550000400", "status": 400, "error": "VALIDATION_ERROR",
                        "meta": 131026, "times": -1}])
    cl = d.client()
    bad = cl.request(avp.text_job(1, to="+1 555 000 0400"))
    tmpl = avp.template_job(3)
    tmpl["message"]["templateName"] = "missing_template"
    missing = cl.request(tmpl)
    good = cl.request(avp.text_job(4))
    wait_all_final(cl, 30)
    j = cl.request({"op": "get", "job": bad["job"]})["job"]
    check(j["state"] == "failed" and j["attempts"] == 1, "400 fails at once: %s" % j)
    check(j["lastError"]["status"] == 400 and j["lastError"]["metaCode"] == 131026,
          "error stored: %s" % j["lastError"])
    j = cl.request({"op": "get", "job": missing["job"]})["job"]
    check(j["state"] == "failed" and j["lastError"]["status"] == 404, "404 fails: %s" % j)
    j = cl.request({"op": "get", "job": good["job"]})["job"]
    check(j["state"] == "sent" and j["wamid"], "good one sent")
    cl.close()
    check(d.stop() == 0, "exit 0")
    api.stop()


def resets_and_429(wd):
    """Connection resets before and after the send counts, and 429s with
    Retry-After: every job ends `sent`; duplicates only from the resets after
    the send counted (the client cannot know those left)."""
    api = avp.FakeAPI(wd, "--reset-before", "0.05", "--reset-after", "0.05")
    # 429 + Retry-After for 10 recipients, twice each: deterministic, whatever
    # the machine's speed (a throughput limit would depend on it).
    throttled = [k * 401 for k in range(10)]  # spread over the 5 senders
    api.control(rules=[{"to": "1555%07d" % i, "status": 429, "error": "RATE_LIMITED",
                        "meta": 130429, "times": 2, "retry_after": 1} for i in throttled])
    d = avp.Daemon(wd, api.base, {"max_attempts": 50, "rate_per_number": 1000}).start()
    n = 4000
    submit_all(d, jobs_mixed(n))
    cl = d.client()
    st = wait_all_final(cl, 180)
    check(st["counts"]["sent"] == n, "all sent: %s" % st["counts"])
    f = api.stats()
    check(f["resets_before"] > 0 and f["resets_after"] > 0, "resets injected: %s" % f)
    check(f["by_status"].get("429", 0) == 2 * len(throttled), "429s injected: %s" % f["by_status"])
    seen = count_markers(api.sends())
    check(len(seen) == n, "every job reached the API")
    dups = sum(c - 1 for c in seen.values())
    check(dups <= f["resets_after"], "duplicates (%d) <= resets after the send (%d)"
          % (dups, f["resets_after"]))
    check(st["possibleDuplicates"] >= f["resets_after"] - dups,
          "possible duplicates counted: %d" % st["possibleDuplicates"])
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def queue_bound(wd):
    """Over max_queued unfinished jobs, submits get QUEUE_FULL; what was
    accepted stays, and the bound frees up as jobs finish."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, {"max_queued": 100}).start()
    cl = d.client()
    later = time.time() + 3600
    answers = cl.pipeline([avp.text_job(i, notBefore=later) for i in range(150)])
    ok = [a for a in answers if a.get("ok")]
    full = [a for a in answers if a.get("error") == "QUEUE_FULL"]
    check(len(ok) == 100 and len(full) == 50, "100 accepted, 50 QUEUE_FULL: %d/%d"
          % (len(ok), len(full)))
    check("max_queued" in full[0]["message"], "the message names the bound: %s" % full[0])
    check(cl.stats()["counts"]["queued"] == 100, "the accepted ones are queued")
    check(api.stats()["accepted"] == 0, "scheduled jobs not sent early")
    cl.close()
    check(d.stop() == 0, "exit 0")
    api.stop()


def concurrent_requests(wd):
    """Requests run concurrently from the start: with a slow API, max_inflight
    requests are at the API together (no transfer waits behind the first
    one's answer), and each answer's slot goes to the next job."""
    api = avp.FakeAPI(wd, "--latency-ms", "1500")
    d = avp.Daemon(wd, api.base, {"max_inflight": 16, "max_inflight_per_number": 16}).start()
    submit_all(d, [avp.text_job(i, sender=avp.SENDERS[0]) for i in range(32)])
    t0 = time.monotonic()
    wait_for(lambda: api.stats()["requests"] >= 16, 10, "16 requests at the API")
    check(time.monotonic() - t0 < 1.2, "16 requests at the API before the first answer came back")
    check(api.stats()["requests"] == 16, "no more than max_inflight at once: %s" % api.stats())
    cl = d.client()
    st = wait_all_final(cl, 30)
    check(st["counts"]["sent"] == 32, "all sent: %s" % st["counts"])
    cl.close()
    check(d.stop() == 0, "exit 0")
    api.stop()


def pause_bound(wd):
    """Operator pauses of distinct campaigns and senders are bounded (10,000):
    one more is QUEUE_FULL, re-pausing a paused one is fine, and a resume
    frees a place. The bound survives a restart (pauses are stored)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    answers = cl.pipeline([{"op": "pause", "campaign": "c%d" % i} for i in range(10000)])
    check(all(a.get("ok") for a in answers), "10,000 pauses accepted: %s"
          % [a for a in answers if not a.get("ok")][:1])
    a = cl.request({"op": "pause", "phoneNumberId": "1000001"})
    check(a.get("error") == "QUEUE_FULL" and "10000" in a["message"], "one more refused: %s" % a)
    check(cl.request({"op": "pause", "campaign": "c5"})["ok"], "re-pausing a paused one is fine")
    check(cl.request({"op": "resume", "campaign": "c5"})["ok"], "resume")
    check(cl.request({"op": "pause", "phoneNumberId": "1000001"})["ok"], "a resume frees a place")
    cl.close()
    check(d.stop() == 0, "exit 0")
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon2").start()
    cl = d2.client()
    a = cl.request({"op": "pause", "campaign": "another"})
    check(a.get("error") == "QUEUE_FULL", "the stored pauses count after a restart: %s" % a)
    cl.close()
    check(d2.stop() == 0, "exit 0")
    api.stop()


def pause_bound_automatic(wd):
    """Automatic sender pauses do not count against the operator's bound:
    10,000 jobs of numbers not in the account (a file whose columns were
    swapped: each `to` taken as the sender) pause 10,000 senders, and the
    operator can still pause a campaign or a sender, before and after a
    restart. Counted, they refused every operator pause from then on
    (QUEUE_FULL "10000 senders and campaigns are paused already"), the
    jobs' cancel and restarts did not help."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    cl = d.client()
    n = 10000
    answers = cl.pipeline([avp.text_job(i, sender="1556%07d" % i, to="+1556%07d" % i,
                                        campaign="swapped") for i in range(n)], window=1000)
    check(len(answers) == n and all(a.get("ok") for a in answers), "acknowledged")
    wait_for(lambda: sum(1 for s in cl.stats()["senders"] if s["paused"]) == n, 120,
             "every unknown sender paused by its 403")
    check(cl.request({"op": "cancel", "campaign": "swapped"}).get("cancelled") == n, "cancel")
    a = cl.request({"op": "pause", "campaign": "urgent"})
    check(a.get("ok") is True, "an operator pause beside 10,000 automatic ones: %s" % a)
    a = cl.request({"op": "pause", "phoneNumberId": avp.SENDERS[0]})
    check(a.get("ok") is True, "an operator pause of a sender: %s" % a)
    cl.close()
    check(d.stop() == 0, "exit 0")
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon2").start()
    cl = d2.client()
    a = cl.request({"op": "pause", "campaign": "another"})
    check(a.get("ok") is True, "after a restart (the automatic pauses are stored): %s" % a)
    cl.close()
    check(d2.stop() == 0, "exit 0")
    api.stop()


CASES = {f.__name__: f for f in (e2e_10k, faults_500, kill9, protocol_errors, startup_errors,
                                 sigterm_at_start, sigterm_inflight, sigterm_twice, sigterm_during_flush,
                                 sigterm_answers_submits,
                                 permanent_errors,
                                 resets_and_429, queue_bound,
                                 concurrent_requests, pause_bound, pause_bound_automatic)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: test_e2e.py %s" % "|".join(CASES))
        sys.exit(2)
    avp.run(CASES[sys.argv[1]])
