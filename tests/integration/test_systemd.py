#!/usr/bin/env python3
"""avenpingd as a systemd service, checked without a systemd PID 1.

- notify: a datagram listener on $NOTIFY_SOCKET gets READY=1 (only once the
  socket accepts), STATUS= lines with the queue depth and the send rate,
  WATCHDOG=1 every second with STATUS= (every half $WATCHDOG_USEC when that
  is shorter), RELOADING=1/READY=1 around a SIGHUP and STOPPING=1 at SIGTERM;
- socket_activation: systemd-socket-activate holds the socket and starts the
  daemon at the first connection; the daemon adopts it (sd_listen_fds);
- reload: SIGHUP changes the send rate the fake API observes, applies the
  log level, reports restart-only keys, survives a bad config, and drops no
  job and no connection;
- units: `systemd-analyze verify` on the units, `systemd-analyze security
  --offline=true` rates the service at 2.0 or lower, and the sysusers.d /
  tmpfiles.d entries create the user and /run/avenpingd in a scratch root;
- deb: CPack builds the .deb; its Depends are the Debian runtime packages
  and adduser | systemd-sysusers; the binaries carry Debian's hardening
  (RELRO, BIND_NOW, stack protector, fortified calls); the packaged binary
  runs --version. With AVP_DEB_INSTALL=1 (CI, a disposable root machine) the
  .deb is also installed with dpkg -i, run, enabled by hand, upgraded,
  removed and purged: the purge removes the enable links.

Usage: test_systemd.py CASE
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import avp  # noqa: E402
from avp import check, wait_for  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SAN_VARS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


class NotifyListener:
    """The service manager's side of sd_notify: a datagram socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # (monotonic time, {key: value})

    def poll(self, timeout):
        """Receives what arrives within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait(self, pred, timeout, what):
        """Receives until a message satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.poll(max(0.01, deadline - time.monotonic()))
            if m is not None and pred(m):
                return m
        raise avp.TestFailure("timed out waiting for %s; got %s"
                              % (what, [m for _, m in self.messages[-5:]]))

    def drain(self):
        """Receives what is queued already (e.g. after the sender exited)."""
        while self.poll(0.05) is not None:
            pass

    def close(self):
        self.sock.close()


def status_numbers(status):
    """'Running: 12 unfinished, 3 in flight, 4.0 sends/s, 1 connections'"""
    m = re.match(r"(\w+): (\d+) unfinished, (\d+) in flight, ([\d.]+) sends/s, (\d+) connections",
                 status)
    check(m is not None, "STATUS= has the documented shape: %r" % status)
    return {"what": m.group(1), "unfinished": int(m.group(2)), "inflight": int(m.group(3)),
            "rate": float(m.group(4)), "connections": int(m.group(5))}


def notify(wd):
    """READY=1 after the socket listens; STATUS= with depth and rate;
    WATCHDOG=1 every second, or every half WATCHDOG_USEC when shorter;
    RELOADING/READY; STOPPING with EXTEND_TIMEOUT_USEC."""
    api = avp.FakeAPI(wd)
    lst = NotifyListener(wd.file("notify.sock"))
    d = avp.Daemon(wd, api.base, {"rate_per_number": 20, "burst_per_number": 1},
                   env={"NOTIFY_SOCKET": lst.path, "WATCHDOG_USEC": "200000"})
    d.start(wait=False)
    ready = lst.wait(lambda m: "READY" in m, 15, "READY=1")
    check(ready["READY"] == "1", "READY=1")
    # Sent only once the store is open and the socket accepts.
    check(d._connectable(), "the socket accepts when READY=1 arrives")
    check(os.path.exists(os.path.join(d.state_dir, "data.mdb")), "the store exists at READY=1")
    check(status_numbers(ready["STATUS"])["unfinished"] == 0, "READY's STATUS: empty queue")

    # Queue depth: 30 jobs held back by notBefore show up in STATUS=.
    cl = d.client()
    later = time.time() + 3600
    answers = cl.pipeline([avp.text_job(i, notBefore=later) for i in range(30)])
    check(all(a.get("ok") for a in answers), "30 scheduled jobs accepted")
    lst.wait(lambda m: "STATUS" in m and status_numbers(m["STATUS"])["unfinished"] == 30, 5,
             "STATUS= with 30 unfinished")
    # Rate: 60 jobs on one sender at 20/s; STATUS= reports a rate near it.
    answers = cl.pipeline([avp.text_job(100 + i, sender="1000001") for i in range(60)])
    check(all(a.get("ok") for a in answers), "60 jobs accepted")
    m = lst.wait(lambda m: "STATUS" in m and status_numbers(m["STATUS"])["rate"] >= 10, 6,
                 "STATUS= with a send rate")
    check(status_numbers(m["STATUS"])["rate"] <= 30, "the rate is the one configured: %s"
          % m["STATUS"])

    # Watchdog: pings at half of 200 ms, so about 10 in a second.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        lst.poll(0.05)
    pings = [t for t, m in lst.messages if m.get("WATCHDOG") == "1" and t >= t0]
    check(6 <= len(pings) <= 20, "WATCHDOG=1 about every 100 ms: %d in 1 s" % len(pings))
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    check(max(gaps) < 0.2, "no gap reaches WATCHDOG_USEC: max %.3f s" % max(gaps))

    # Reload: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
    d.proc.send_signal(signal.SIGHUP)
    m = lst.wait(lambda m: "RELOADING" in m, 5, "RELOADING=1")
    check(m.get("MONOTONIC_USEC", "").isdigit(), "RELOADING=1 carries MONOTONIC_USEC")
    lst.wait(lambda m: m.get("READY") == "1", 5, "READY=1 after the reload")

    cl.close()
    rc = d.stop()
    check(rc == 0, "SIGTERM exits 0, got %s" % rc)
    lst.drain()
    stopping = [m for _, m in lst.messages if m.get("STOPPING") == "1"]
    check(stopping, "STOPPING=1 at SIGTERM")
    check(stopping[0]["STATUS"].startswith("Stopping:"), "STATUS= says Stopping")
    # The stop asks for shutdown_timeout_ms (10 s) plus 20 s for the last
    # commits and answers: a shutdown_timeout_ms beyond TimeoutStopSec= is
    # honoured instead of ending in SIGKILL with requests in flight.
    check(stopping[0].get("EXTEND_TIMEOUT_USEC") == str((10000 + 20000) * 1000),
          "STOPPING=1 extends the stop timeout: %s" % stopping[0])

    # Without WATCHDOG_USEC: STATUS= still, no WATCHDOG=1.
    lst.messages.clear()
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon2",
                    env={"NOTIFY_SOCKET": lst.path})
    d2.start(wait=False)
    lst.wait(lambda m: m.get("READY") == "1", 15, "READY=1")
    lst.wait(lambda m: "STATUS" in m and "READY" not in m, 5, "a periodic STATUS=")
    check(not any("WATCHDOG" in m for _, m in lst.messages), "no WATCHDOG=1 when not asked")
    check(d2.stop() == 0, "exit 0")

    # The unit's WatchdogSec=30: WATCHDOG=1 every second, with STATUS=
    # (operations.md), not every 15 s.
    lst.drain()
    lst.messages.clear()
    d3 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon3",
                    env={"NOTIFY_SOCKET": lst.path, "WATCHDOG_USEC": "30000000"})
    d3.start(wait=False)
    lst.wait(lambda m: m.get("READY") == "1", 15, "READY=1")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4.0:
        lst.poll(0.1)
    pings = [t for t, m in lst.messages if m.get("WATCHDOG") == "1" and t >= t0]
    check(3 <= len(pings) <= 6, "WATCHDOG=1 every second under WatchdogSec=30: %d in 4 s"
          % len(pings))
    check(d3.stop() == 0, "exit 0")
    check(avp.TOKEN not in d.stderr() + d2.stderr(), "token never logged")
    lst.close()
    api.stop()


def repair_extends_start(wd):
    """A start that rebuilds the store's indexes (they disagree with its
    counters) asks the service manager for more start time first
    (EXTEND_TIMEOUT_USEC, with a STATUS= saying why), before READY=1: the
    rebuild reads every job record, and a big store's could outlast the
    default TimeoutStartSec= of 90 s, be killed and, with Restart=on-failure,
    start over for good. A start without a rebuild asks for nothing."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    later = time.time() + 3600
    ids = avp.submit_all(d, [avp.text_job(i, notBefore=later) for i in range(5)])
    check(d.stop() == 0, "exit 0")
    lst = NotifyListener(wd.file("notify.sock"))
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="plain",
                    env={"NOTIFY_SOCKET": lst.path})
    d2.start(wait=False)
    lst.wait(lambda m: m.get("READY") == "1", 15, "READY=1")
    check(not any("EXTEND_TIMEOUT_USEC" in m for _, m in lst.messages),
          "no extension without a rebuild: %s" % [m for _, m in lst.messages][:3])
    check(d2.stop() == 0, "exit 0")
    subprocess.check_call([avp.STORETOOL, "drop-due", d.state_dir, ids[2]])
    lst.drain()
    lst.messages.clear()
    d3 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="rebuild",
                    env={"NOTIFY_SOCKET": lst.path})
    d3.start(wait=False)
    lst.wait(lambda m: m.get("READY") == "1", 15, "READY=1")
    first = [m for _, m in lst.messages]
    ext = [i for i, m in enumerate(first) if "EXTEND_TIMEOUT_USEC" in m]
    check(ext and ext[0] < [i for i, m in enumerate(first) if m.get("READY") == "1"][0],
          "EXTEND_TIMEOUT_USEC before READY=1: %s" % first[:3])
    m = first[ext[0]]
    check(int(m["EXTEND_TIMEOUT_USEC"]) >= 600 * 1000000 and
          "ebuilding the store's indexes" in m.get("STATUS", ""),
          "ten minutes more, and why: %s" % m)
    check(d3.stop() == 0, "exit 0")
    lst.close()
    api.stop()


def _connect_when_listening(path, timeout):
    """The socket file exists from bind(), before listen(): connect until
    the listener takes it (ECONNREFUSED meanwhile)."""
    box = []

    def attempt():
        try:
            box.append(avp.Client(path))
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    wait_for(attempt, timeout, "a listener on %s" % path)
    return box[0]


def socket_activation(wd):
    """systemd-socket-activate listens; the daemon starts at the first
    connection, adopts the socket, serves it, and leaves its file alone."""
    ssa = shutil.which("systemd-socket-activate")
    check(ssa is not None, "systemd-socket-activate installed (scripts/deps.sh: systemd)")
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base)  # writes the config; started below
    path = wd.file("activated.sock")
    cmd = [ssa, "-l", path]
    for v in SAN_VARS:  # systemd-socket-activate passes only what -E names
        if v in os.environ:
            cmd += ["-E", v]
    cmd += [avp.DAEMON, "--config", d.config]
    d.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(d.errfile, "a"))
    wd.procs.append(d.proc)
    # The first connection starts the daemon (same pid: systemd-socket-activate execs it).
    cl = _connect_when_listening(path, 10)
    r = cl.request({"op": "ping"})
    check(r.get("ok") and r.get("version"), "ping answered on the passed socket: %s" % r)
    check(not os.path.exists(d.socket), "the configured socket path was not used")
    check("passed by the service manager" in d.stderr(), "start-up names socket activation")
    answers = cl.pipeline([avp.text_job(i) for i in range(20)])
    check(all(a.get("ok") for a in answers), "20 jobs accepted")
    wait_for(lambda: len(api.sends()) == 20, 30, "20 sends at the API")
    cl2 = avp.Client(path)
    check(cl2.request({"op": "ping"}).get("ok"), "a second connection works")
    cl2.close()
    cl.close()
    rc = d.stop()
    check(rc == 0, "SIGTERM exits 0, got %s" % rc)
    check(os.path.exists(path), "the daemon does not unlink a socket it did not create")
    # Two passed sockets are refused with one clear line.
    d3 = avp.Daemon(wd, api.base, name="two")
    proc = subprocess.Popen([ssa, "-l", wd.file("a.sock"), "-l", wd.file("b.sock"),
                             avp.DAEMON, "--config", d3.config],
                            stdout=subprocess.DEVNULL, stderr=open(d3.errfile, "a"))
    wd.procs.append(proc)
    s = _connect_when_listening(wd.file("a.sock"), 10)
    check(proc.wait(15) != 0, "two passed sockets: the daemon refuses to start")
    s.close()
    check("expected one listening Unix stream socket" in d3.stderr(),
          "one clear line: %s" % d3.stderr())
    # LISTEN_FDS naming a descriptor that is not open: said so (was "bad
    # LISTEN_PID/LISTEN_FDS: Bad file descriptor").
    d4 = avp.Daemon(wd, api.base, name="nofd")
    env = dict(d4.env)
    p = subprocess.run(["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --config "$1"',
                        avp.DAEMON, d4.config], env=env, capture_output=True, text=True,
                       timeout=30)
    check(p.returncode != 0 and "descriptors from 3 on that are not open" in p.stderr,
          "LISTEN_FDS without the descriptor: %d %s" % (p.returncode, p.stderr))
    api.stop()


def _rate(sends, t_from, t_to):
    """Sends per second between the first and the last send logged by the
    fake API within [t_from, t_to)."""
    ts = sorted(s["t"] for s in sends if t_from <= s["t"] < t_to)
    check(len(ts) >= 3, "enough sends to measure a rate: %d" % len(ts))
    return (len(ts) - 1) / (ts[-1] - ts[0])


def reload(wd):
    """SIGHUP re-reads the config: the observed rate follows, the log level
    applies, restart-only keys are reported, a bad file changes nothing; no
    job and no connection is dropped."""
    api = avp.FakeAPI(wd)
    cfg = {"rate_per_number": 4, "burst_per_number": 1, "log_level": "info"}
    d = avp.Daemon(wd, api.base, cfg).start()
    cl = d.client()
    n = 120
    ids = [a["job"] for a in cl.pipeline([avp.text_job(i, sender="1000001") for i in range(n)])]
    check(len(ids) == n, "%d jobs accepted" % n)
    wait_for(lambda: len(api.sends()) >= 3, 10, "the first sends")
    t0 = time.time()
    time.sleep(1.5)  # a measuring window, not synchronisation
    slow = _rate(api.sends(), t0, time.time())
    check(1.5 <= slow <= 6, "before the reload: about 4 sends/s, got %.1f" % slow)

    # A bad config: refused with file, line and key; nothing changes.
    good = open(d.config).read()
    with open(d.config, "a") as f:
        f.write("rate_per_numbr = 400\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.stderr(), 5, "the failed reload's log line")
    check("rate_per_numbr" in d.stderr() and "daemon.conf:" in d.stderr(),
          "the failure names file and key: %s" % d.stderr()[-400:])
    check(cl.request({"op": "ping"}).get("ok"), "still serving after a bad reload")

    # The real reload: 40/s, log level warn, and a restart-only key.
    new = dict(cfg, rate_per_number=40, burst_per_number=1, log_level="warn",
               max_connections=7)
    # The same file with those keys changed (a key given twice is an error).
    keep = [ln for ln in good.splitlines() if ln.partition("=")[0].strip() not in new]
    with open(d.config, "w") as f:
        f.write("\n".join(keep) + "\n")
        for k, v in new.items():
            f.write("%s = %s\n" % (k, v))
    sent_before = len(api.sends())
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "only applied by a restart" in d.stderr(), 5, "the reload's report")
    err = d.stderr()
    check(re.search(r"warning: SIGHUP: changed but only applied by a restart .*: max_connections",
                    err),
          "max_connections reported as needing a restart: %s" % err[-400:])
    # log_level = warn applied before the report: the info summary is gone.
    check("applied:" not in err.split("reload failed")[-1],
          "the new log level (warn) hides the info line")
    t1 = time.time() + 0.3
    wait_for(lambda: len(api.sends()) >= sent_before + 60, 10, "sends at the new rate")
    fast = _rate(api.sends(), t1, time.time())
    check(fast >= 20, "after the reload: about 40 sends/s, got %.1f (before %.1f)" % (fast, slow))
    check(fast <= 60, "the new rate still limits: %.1f" % fast)

    # Nothing dropped: the same connection works and every job is sent once.
    check(cl.request({"op": "ping"}).get("ok"), "the connection opened before SIGHUP still works")
    wait_for(lambda: cl.stats()["counts"]["sent"] == n, 30, "every job sent")
    seen = [avp.marker(s) for s in api.sends()]
    check(len(seen) == n and len(set(seen)) == n, "each job reached the API once")
    cl.close()
    check(d.stop() == 0, "exit 0")
    api.stop()


def _units_for_test(wd):
    """The units with ExecStart pointing at the built daemon (verify checks
    that the binary exists)."""
    out = wd.file("units")
    os.makedirs(out)
    for u in ("avenpingd.service", "avenpingd.socket"):
        text = open(os.path.join(SRC, "systemd", u)).read()
        text = text.replace("/usr/sbin/avenpingd", os.path.abspath(avp.DAEMON))
        with open(os.path.join(out, u), "w") as f:
            f.write(text)
    return out


def unit_settings(path):
    """{section: {key: [values]}} of a unit file (comments dropped; a key
    given on several lines keeps each line's value)."""
    sections = {}
    cur = None
    for ln in open(path):
        ln = ln.strip()
        if not ln or ln[0] in "#;":
            continue
        if ln.startswith("[") and ln.endswith("]"):
            cur = sections.setdefault(ln[1:-1], {})
            continue
        k, _, v = ln.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def unit_names(settings, section, key):
    """The unit names a dependency key lists (space-separated, any line)."""
    return {n for v in settings.get(section, {}).get(key, []) for n in v.split()}


def units(wd):
    """systemd-analyze verify and security; sysusers.d and tmpfiles.d."""
    sa = shutil.which("systemd-analyze")
    check(sa is not None, "systemd-analyze installed (scripts/deps.sh: systemd)")
    udir = _units_for_test(wd)
    files = [os.path.join(udir, u) for u in ("avenpingd.service", "avenpingd.socket")]
    p = subprocess.run([sa, "verify", "--man=no"] + files, capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(),
          "systemd-analyze verify is clean: rc %d: %s%s" % (p.returncode, p.stdout, p.stderr))

    p = subprocess.run([sa, "security", "--offline=true", files[0]], capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"Overall exposure level for avenpingd\.service: ([\d.]+)", p.stdout)
    check(m is not None, "security prints the exposure: %s%s" % (p.stdout[-300:], p.stderr))
    score = float(m.group(1))
    check(score <= 2.0, "exposure %.1f <= 2.0" % score)
    print("exposure level %.1f" % score)

    # The service the notify protocol and the hardening need.
    svc = open(files[0]).read()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=avenpingd",
                 "RuntimeDirectory=avenpingd", "User=avenpingd", "ExecReload=",
                 "TimeoutStopSec="):
        check(line in svc, "the service has %s" % line)
    # The daemon always gets its socket from avenpingd.socket: started alone
    # it would bind the path itself, and a later start of the socket unit
    # would replace the file under it (the daemon then listens on an inode
    # no client reaches).
    conf = unit_settings(files[0])
    check("avenpingd.socket" in unit_names(conf, "Unit", "Requires"),
          "the service Requires= avenpingd.socket: %s" % conf.get("Unit"))
    check("avenpingd.socket" in unit_names(conf, "Unit", "After"),
          "the service is ordered After= avenpingd.socket: %s" % conf.get("Unit"))
    check("avenpingd.socket" in unit_names(conf, "Install", "Also"),
          "enabling the service enables the socket (Also=): %s" % conf.get("Install"))
    # The credential by name only: systemd searches /etc/credstore/ and the
    # like, and a missing one is not fatal. With a path, a missing file
    # fails the start (243/CREDENTIALS) even when the operator gives the
    # token as token_file or AVENPING_TOKEN.
    creds = conf["Service"].get("LoadCredential", [])
    check(creds == ["avenping-token"],
          "LoadCredential=avenping-token, without a path: %s" % creds)
    # What the daemon then gets without a credstore file: an empty
    # $CREDENTIALS_DIRECTORY; it goes on to the token it is given otherwise.
    api = avp.FakeAPI(wd)
    empty = wd.file("credentials")
    os.makedirs(empty)
    d = avp.Daemon(wd, api.base, name="nocred",
                   env={"CREDENTIALS_DIRECTORY": empty, "AVENPING_TOKEN": avp.TOKEN})
    with open(d.config) as f:
        cfg = [ln for ln in f if not ln.startswith("token_file")]
    with open(d.config, "w") as f:
        f.writelines(cfg)
    d.start()
    cl = d.client()
    check(cl.request(avp.text_job(1)).get("ok"), "a job accepted")
    wait_for(lambda: len(api.sends()) == 1, 10, "the send")
    cl.close()
    check(d.stop() == 0, "exit 0")
    api.stop()
    stop_s = int(re.search(r"TimeoutStopSec=(\d+)", svc).group(1))
    check(10 < stop_s, "the default shutdown_timeout_ms (10 s) is below TimeoutStopSec")
    sock = open(files[1]).read()
    check("SocketMode=0660" in sock and "SocketGroup=avenpingd" in sock, "socket permissions")

    # sysusers.d then tmpfiles.d in a scratch root: the user, then the dir.
    root = wd.file("root")
    os.makedirs(os.path.join(root, "etc"))
    p = subprocess.run(["systemd-sysusers", "--root", root,
                        os.path.join(SRC, "systemd", "avenpingd.sysusers")],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "systemd-sysusers: %s" % p.stderr)
    passwd = open(os.path.join(root, "etc", "passwd")).read()
    check(re.search(r"^avenpingd:x:\d+:\d+:.*:/var/lib/avenpingd:/usr/sbin/nologin$", passwd,
                    re.M), "the avenpingd user: %s" % passwd)
    check(re.search(r"^avenpingd:x:\d+:", open(os.path.join(root, "etc", "group")).read(),
                    re.M), "the avenpingd group")
    if os.geteuid() != 0:  # scripts/test.sh run by a user with sudo (README)
        print("systemd-tmpfiles --create skipped: it chowns /run/avenpingd to the avenpingd "
              "user, which needs root")
        return
    p = subprocess.run(["systemd-tmpfiles", "--create", "--root", root,
                        os.path.join(SRC, "systemd", "avenpingd.tmpfiles")],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "systemd-tmpfiles: %s" % p.stderr)
    st = os.stat(os.path.join(root, "run", "avenpingd"))
    check(st.st_mode & 0o7777 == 0o750, "/run/avenpingd is 0750: %o" % st.st_mode)


def dpkg(args, wait=300):
    """Runs dpkg, waiting while another package manager holds its lock (an
    apt run elsewhere on the machine is not this test's failure)."""
    deadline = time.monotonic() + wait
    while True:
        p = subprocess.run(["dpkg"] + args, capture_output=True, text=True, timeout=wait)
        if p.returncode == 0 or "lock" not in p.stderr or time.monotonic() > deadline:
            return p
        time.sleep(1)


def deb(wd):
    """CPack builds the .deb; Depends lists the runtime packages; the
    packaged binary runs. AVP_DEB_INSTALL=1: dpkg -i, run, purge."""
    build = avp.BUILD
    cpack = os.environ.get("AVP_CPACK") or shutil.which("cpack")
    check(cpack is not None, "cpack found")
    out = wd.file("pkg")
    p = subprocess.run([cpack, "--config", os.path.join(build, "CPackConfig.cmake"), "-B", out],
                       capture_output=True, text=True, timeout=300)
    check(p.returncode == 0, "cpack: %s%s" % (p.stdout[-1000:], p.stderr[-1000:]))
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    check(len(debs) == 1, "one .deb: %s" % debs)
    pkg = os.path.join(out, debs[0])
    info = subprocess.run(["dpkg-deb", "-f", pkg, "Package", "Version", "Depends"],
                          capture_output=True, text=True, check=True).stdout
    depends = re.search(r"^Depends: (.*)$", info, re.M).group(1)
    names = {d.strip().split(" ")[0] for d in depends.split(",")}
    for lib in ("libc6", "libuv1", "libcurl4", "libcjson1", "liblmdb0"):
        check(lib in names, "Depends has %s: %s" % (lib, depends))
    check(not any(n.endswith("-dev") for n in names), "no -dev package in Depends")
    # The postinst creates the user with systemd-sysusers, or adduser
    # without it: one of them must be installed.
    groups = [{a.strip().split(" ")[0] for a in g.split("|")} for g in depends.split(",")]
    check({"adduser", "systemd-sysusers"} in groups,
          "Depends has adduser | systemd-sysusers: %s" % depends)
    files = subprocess.run(["dpkg-deb", "-c", pkg], capture_output=True, text=True,
                           check=True).stdout
    for f in ("./usr/sbin/avenpingd", "./usr/lib/systemd/system/avenpingd.service",
              "./usr/lib/systemd/system/avenpingd.socket", "./usr/lib/sysusers.d/avenpingd.conf",
              "./usr/lib/tmpfiles.d/avenpingd.conf", "./etc/avenpingd/avenpingd.conf",
              "./usr/share/doc/avenpingd/operations.md"):
        check(re.search(r" %s$" % re.escape(f), files, re.M), "the package holds %s" % f)
    conffiles = subprocess.run(["dpkg-deb", "-I", pkg, "conffiles"], capture_output=True,
                               text=True).stdout
    check("/etc/avenpingd/avenpingd.conf" in conffiles, "the config is a conffile")
    # The packaged binary runs (extracted, not installed).
    x = wd.file("x")
    subprocess.run(["dpkg-deb", "-x", pkg, x], check=True)
    unit = open(os.path.join(x, "usr/lib/systemd/system/avenpingd.service")).read()
    check("ExecStart=/usr/sbin/avenpingd --config /etc/avenpingd/avenpingd.conf" in unit,
          "the packaged unit names the packaged paths")
    # Debian's hardening flags (lintian: hardening-no-bindnow,
    # hardening-no-fortify-functions): full RELRO, immediate binding, the
    # stack protector and, in an optimised build, fortified libc calls.
    cache = open(os.path.join(build, "CMakeCache.txt")).read()
    build_type = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", cache, re.M).group(1)
    for b in ("usr/sbin/avenpingd", "usr/bin/avenpingctl"):
        path = os.path.join(x, b)
        dyn = subprocess.run(["readelf", "-dW", path], capture_output=True, text=True,
                             check=True).stdout
        check(re.search(r"\(FLAGS\)\s+.*BIND_NOW", dyn) or re.search(r"FLAGS_1.*\bNOW\b", dyn),
              "%s is linked with -z now: %s" % (b, dyn))
        segs = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True,
                              check=True).stdout
        check("GNU_RELRO" in segs, "%s has a RELRO segment" % b)
        syms = subprocess.run(["readelf", "--dyn-syms", "-W", path], capture_output=True,
                              text=True, check=True).stdout
        check("__stack_chk_fail" in syms, "%s is built with the stack protector" % b)
        if build_type in ("Release", "RelWithDebInfo", "MinSizeRel"):
            chk = sorted(set(re.findall(r"__\w+_chk\b", syms)) - {"__stack_chk_fail"})
            check(chk, "%s calls fortified functions (_FORTIFY_SOURCE)" % b)
    v = subprocess.run([os.path.join(x, "usr/sbin/avenpingd"), "--version"],
                       capture_output=True, text=True, timeout=10)
    check(v.returncode == 0 and v.stdout.startswith("avenpingd "), "--version: %s" % v.stdout)
    # The example config is valid: the daemon gets past the config (it
    # then stops at the missing token, naming it).
    env = {k: v for k, v in os.environ.items() if k not in ("AVENPING_TOKEN",
                                                             "CREDENTIALS_DIRECTORY")}
    r = subprocess.run([os.path.join(x, "usr/sbin/avenpingd"), "--config",
                        os.path.join(x, "etc/avenpingd/avenpingd.conf")],
                       capture_output=True, text=True, timeout=10, env=env)
    check(r.returncode != 0 and "no API token" in r.stderr,
          "the example config loads: %s" % r.stderr)
    # ... and so does every key in it uncommented, as shown.
    with open(os.path.join(x, "etc/avenpingd/avenpingd.conf")) as f:
        lines = [re.sub(r"^#([a-z_.0-9]+ =)", r"\1", ln) for ln in f]
    check(sum(1 for ln in lines if re.match(r"^[a-z_.0-9]+ =", ln)) >= 25,
          "the example shows the keys")
    uncommented = os.path.join(x, "all-keys.conf")
    with open(uncommented, "w") as f:
        f.writelines(lines)
    r = subprocess.run([os.path.join(x, "usr/sbin/avenpingd"), "--config", uncommented],
                       capture_output=True, text=True, timeout=10, env=env)
    check(r.returncode != 0 and "no API token" in r.stderr,
          "every key of the example uncommented loads: %s" % r.stderr)
    # Its metrics_file is one a scraper can read: a *.prom file (all that
    # node_exporter's textfile collector reads), not in the 0700 state dir.
    metrics = [ln.split("=", 1)[1].split("#")[0].strip() for ln in lines
               if ln.startswith("metrics_file =")]
    check(len(metrics) == 1, "the example shows metrics_file: %s" % metrics)
    check(metrics[0].endswith(".prom") and not metrics[0].startswith("/var/lib/avenpingd/"),
          "the example's metrics_file is outside the state dir (0700): %s" % metrics[0])

    if os.environ.get("AVP_DEB_INSTALL") != "1":
        print("dpkg -i skipped (set AVP_DEB_INSTALL=1 on a disposable root machine)")
        return
    check(os.geteuid() == 0, "AVP_DEB_INSTALL=1 needs root")
    # What `systemctl enable avenpingd.service` makes (Also=: the socket too).
    links = ["/etc/systemd/system/multi-user.target.wants/avenpingd.service",
             "/etc/systemd/system/sockets.target.wants/avenpingd.socket"]
    masks = ["/etc/systemd/system/avenpingd.service", "/etc/systemd/system/avenpingd.socket"]
    try:
        p = dpkg(["-i", pkg])
        check(p.returncode == 0, "dpkg -i: %s%s" % (p.stdout, p.stderr))
        v = subprocess.run(["/usr/sbin/avenpingd", "--version"], capture_output=True, text=True,
                           timeout=10)
        check(v.returncode == 0 and v.stdout.startswith("avenpingd "),
              "installed --version: %s" % v.stdout)
        check(subprocess.run(["getent", "passwd", "avenpingd"],
                             capture_output=True).returncode == 0, "postinst created the user")
        check(os.path.isdir("/run/avenpingd"), "postinst created /run/avenpingd")
        check(not any(os.path.lexists(ln) for ln in links), "dpkg -i enables nothing")
        # The operator enables the service (systemctl works on the unit
        # files without a running systemd too).
        p = subprocess.run(["systemctl", "enable", "avenpingd.service"], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 0, "systemctl enable: %s%s" % (p.stdout, p.stderr))
        check(all(os.path.islink(ln) for ln in links), "enabled, with the socket (Also=)")
        p = dpkg(["-i", pkg])  # an upgrade (same version) keeps them
        check(p.returncode == 0, "dpkg -i again: %s%s" % (p.stdout, p.stderr))
        check(all(os.path.islink(ln) for ln in links), "an upgrade keeps the units enabled")
        p = dpkg(["--remove", "avenpingd"])
        check(p.returncode == 0, "dpkg --remove: %s%s" % (p.stdout, p.stderr))
        check(all(os.path.islink(ln) for ln in links),
              "remove (not purge) keeps the operator's enable links")
    finally:
        p = dpkg(["--purge", "avenpingd"])
        left = [ln for ln in links + masks if os.path.lexists(ln)]
        for ln in left:  # leave the machine as it was, also when purge fails
            os.unlink(ln)
    check(p.returncode == 0, "dpkg --purge: %s%s" % (p.stdout, p.stderr))
    check(not os.path.exists("/usr/sbin/avenpingd"), "dpkg --purge removed the binary")
    check(not left, "dpkg --purge disables the units (no link or mask left): %s" % left)


def notify_inflight(wd):
    """STATUS='s "in flight" is the requests on the wire, at most
    max_inflight: it showed the jobs picked, whose `sending` is committed
    ahead of a free request slot (here 40 of them with 4 requests held by a
    slow API)."""
    api = avp.FakeAPI(wd)
    api.control(latency_ms=3000)
    lst = NotifyListener(wd.file("notify.sock"))
    d = avp.Daemon(wd, api.base, {"max_inflight": 4},
                   env={"NOTIFY_SOCKET": lst.path})
    d.start(wait=False)
    lst.wait(lambda m: "READY" in m, 15, "READY=1")
    cl = d.client()
    answers = cl.pipeline([avp.text_job(i, to="+1677%07d" % i) for i in range(40)])
    check(all(a.get("ok") for a in answers), "40 jobs accepted")
    wait_for(lambda: cl.stats()["inflight"] > 4 and cl.stats()["httpInflight"] == 4, 15,
             "more jobs picked than requests on the wire")
    lst.drain()  # the STATUS= lines from before
    m = lst.wait(lambda m: "STATUS" in m and status_numbers(m["STATUS"])["inflight"] > 0, 5,
                 "STATUS= with requests in flight")
    check(status_numbers(m["STATUS"])["inflight"] <= 4, "STATUS= counts requests, at most "
          "max_inflight: %s (stats inflight %d)" % (m["STATUS"], cl.stats()["inflight"]))
    cl.close()
    d.stop()
    api.stop()


def reload_raises_inflight(wd):
    """A reload that raises max_inflight starts requests in the new slots at
    once: they waited for a request in flight to end, as long as the API
    took to answer (20 s here)."""
    api = avp.FakeAPI(wd)
    api.control(latency_ms=20000)
    cfg = {"max_inflight": 4, "shutdown_timeout_ms": 500}
    d = avp.Daemon(wd, api.base, cfg).start()
    cl = d.client()
    answers = cl.pipeline([avp.text_job(i, to="+1678%07d" % i) for i in range(40)])
    check(all(a.get("ok") for a in answers), "40 jobs accepted")
    wait_for(lambda: cl.stats()["httpInflight"] == 4, 15, "4 requests in flight")
    text = open(d.config).read().replace("max_inflight = 4", "max_inflight = 12")
    check("max_inflight = 12" in text, "the config rewritten: %s" % text)
    with open(d.config, "w") as f:
        f.write(text)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: cl.stats()["httpInflight"] == 12, 10, "12 requests in flight after the reload")
    cl.close()
    d.stop()
    api.stop()


CASES = {f.__name__: f for f in (notify, notify_inflight, reload_raises_inflight, socket_activation, reload, units, deb,
                                   repair_extends_start)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: test_systemd.py %s" % "|".join(CASES))
        sys.exit(2)
    avp.run(CASES[sys.argv[1]])
