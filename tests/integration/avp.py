"""Harness for avenpingd's integration tests: real processes, real sockets.

Starts the fake v2 API (avp-fakeapi) and the daemon (avenpingd) as child
processes in a temporary directory, talks to the daemon over its Unix socket
and judges from the fake API's side (its send log and counters).
Standard library only.
"""
import collections
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILD = os.environ.get("AVP_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
DAEMON = os.environ.get("AVP_DAEMON", os.path.join(BUILD, "daemon", "avenpingd"))
FAKEAPI = os.environ.get("AVP_FAKEAPI", os.path.join(BUILD, "tests", "fakeapi", "avp-fakeapi"))
FAULTFS = os.environ.get("AVP_FAULTFS_LIB",
                         os.path.join(BUILD, "tests", "faultfs", "libavp-faultfs.so"))
STORETOOL = os.path.join(BUILD, "tests", "faultfs", "avp-storetool")
TIMESHIFT = os.environ.get("AVP_TIMESHIFT_LIB", os.path.join(BUILD, "tests", "faultfs", "libavp-timeshift.so"))
# A command prefix for the daemon, e.g. valgrind (scripts/valgrind.sh).
WRAPPER = shlex.split(os.environ.get("AVP_WRAPPER", ""))
TOKEN = "test-token"
SENDERS = ["1000001", "1000002", "1000003", "1000004", "1000005"]


class TestFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred() until it is true. The condition is the event awaited;
    the timeout only bounds a test that would otherwise hang."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Workdir:
    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix="avp-%s-" % name)
        self.procs = []

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                # A process started in a session of its own (nginx) takes
                # its children along: a killed nginx master leaves its
                # workers running otherwise.
                try:
                    if os.getpgid(p.pid) == p.pid:
                        os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.kill()
                p.wait(10)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class FakeAPI:
    def __init__(self, wd, *args):
        self.log = wd.file("sends.jsonl")
        port_file = wd.file("fakeapi.port")
        self.proc = subprocess.Popen(
            [FAKEAPI, "--port", "0", "--port-file", port_file, "--log", self.log,
             "--token", TOKEN, "--seed", "42"] + list(args),
            stdout=subprocess.DEVNULL, stderr=open(wd.file("fakeapi.err"), "w"))
        wd.procs.append(self.proc)
        self.port = int(wait_for(lambda: _read(port_file), 10, "the fake API's port file"))
        self.base = "http://127.0.0.1:%d" % self.port

    def _req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.base + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(r, timeout=10) as f:
            return json.loads(f.read())

    def control(self, **kw):
        return self._req("POST", "/_fake/control", kw)

    def stats(self):
        return self._req("GET", "/_fake/stats")

    def sends(self):
        """Every accepted send, in the order the fake API logged them."""
        if not os.path.exists(self.log):
            return []
        # One read to the end, then lines: the fake API may be appending, and
        # a read can end inside a line being written. Iterating the file went
        # on past that end once the file had grown and returned the rest of
        # the line as a line of its own ("Expecting value: line 1 column 1",
        # once in ctl_import_formats). The piece after the last newline is a
        # line not yet complete.
        with open(self.log) as f:
            data = f.read()
        return [json.loads(line) for line in data.split("\n")[:-1]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def _read(path):
    try:
        with open(path) as f:
            s = f.read().strip()
            return s or None
    except FileNotFoundError:
        return None


class Daemon:
    def __init__(self, wd, api_base, config=None, state_dir=None, env=None, name="daemon"):
        self.wd = wd
        self.socket = wd.file("avenpingd.sock")
        self.state_dir = state_dir or wd.file("state")
        self.token_file = wd.file("token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        cfg = {
            "socket": self.socket,
            "state_dir": self.state_dir,
            "api_base": api_base,
            "token_file": self.token_file,
            "rate_per_number": 100000,
            "backoff_base_ms": 20,
            "backoff_max_ms": 500,
            # The daemon's default. The exactly-once checks count a request
            # that outlived this as sent twice (a timed-out request is
            # retried: at-least-once), so it must outlast a stall of the
            # machine (4.75 s seen once in CI with 5000 here).
            "request_timeout_ms": 30000,
            "log_level": os.environ.get("AVP_LOG_LEVEL", "info"),
        }
        cfg.update(config or {})
        # AVP_TEST_CONFIG="key=value,...": keys for every daemon of a test,
        # over the test's own (ctest runs some cases again with another
        # http_threads this way).
        for kv in filter(None, os.environ.get("AVP_TEST_CONFIG", "").split(",")):
            k, _, v = kv.partition("=")
            cfg[k.strip()] = v.strip()
        self.config = wd.file("%s.conf" % name)
        with open(self.config, "w") as f:
            for k, v in cfg.items():
                f.write("%s = %s\n" % (k, v))
        self.errfile = wd.file("%s.err" % name)
        self.env = dict(os.environ)
        self.env.pop("AVENPING_TOKEN", None)
        self.env.update(env or {})
        self.preexec = None  # run in the child before exec (setrlimit, say)
        self.proc = None

    def start(self, wait=True):
        self.proc = subprocess.Popen(WRAPPER + [DAEMON, "--config", self.config],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.errfile, "a"), env=self.env,
                                     preexec_fn=self.preexec)
        self.wd.procs.append(self.proc)
        if wait:
            wait_for(self._connectable, 15, "the daemon's socket")
        return self

    def _connectable(self):
        """Ready: a ping is answered. (The socket accepts from the bind on,
        before the store is open: connecting alone proves nothing.)"""
        if self.proc.poll() is not None:
            raise TestFailure("daemon exited with %s: %s" % (self.proc.returncode, self.stderr()))
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.socket)
            s.settimeout(2)
            s.sendall(b'{"op":"ping"}\n')
            return s.recv(1) != b""
        except OSError:
            return False
        finally:
            s.close()

    def stderr(self):
        with open(self.errfile) as f:
            return f.read()

    def client(self):
        return Client(self.socket)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self, timeout=30):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, obj):
        obj = dict(obj)
        obj.setdefault("id", self.next_id)
        self.next_id += 1
        self.send_raw((json.dumps(obj) + "\n").encode())
        return self.read_line()

    def pipeline(self, objs, window=2000):
        """Sends objs pipelined (at most `window` unanswered) and returns the
        answers in order. Stops early, returning what was answered, if the
        connection drops: answers the daemon wrote before it went away are
        still read (a failed write does not end the reading)."""
        answers = []
        sent = 0
        writable = True
        try:
            while len(answers) < sent or (writable and sent < len(objs)):
                chunk = []
                while writable and sent < len(objs) and sent - len(answers) < window:
                    chunk.append(json.dumps(objs[sent]) + "\n")
                    sent += 1
                if chunk:
                    try:
                        self.send_raw("".join(chunk).encode())
                    except ConnectionError:
                        writable = False
                answers.append(self.read_line())
        except (EOFError, ConnectionError, socket.timeout):
            pass
        return answers

    def stats(self):
        return self.request({"op": "stats"})["stats"]


def text_job(i, sender=None, to=None, **extra):
    sender = sender or SENDERS[i % len(SENDERS)]
    to = to or "+1555%07d" % i
    j = {"op": "send", "type": "text",
         "message": {"phoneNumberId": sender, "to": to, "text": "job-%d" % i}}
    j.update(extra)
    return j


def template_job(i, sender=None, to=None, **extra):
    sender = sender or SENDERS[i % len(SENDERS)]
    to = to or "1555%07d" % i
    j = {"op": "template_send",
         "message": {"phoneNumberId": sender, "to": to, "templateName": "promo",
                     "language": "en_US",
                     "components": [{"type": "body", "parameters": [
                         {"type": "text", "text": "job-%d" % i}]}]}}
    j.update(extra)
    return j


def marker(send):
    """The job-<i> marker a test put into a logged send's body."""
    b = send["body"]
    if "text" in b:
        return b["text"]
    return b["components"][0]["parameters"][0]["text"]


def unfinished(stats):
    """Jobs not yet final in a `stats` or `campaign` answer's counts."""
    c = stats["counts"]
    return c["queued"] + c["retrying"] + c["sending"]


def wait_all_final(cl, timeout):
    """Waits until no job is queued, retrying or sending; returns the stats."""
    return wait_for(lambda: (lambda s: s if unfinished(s) == 0 else None)(cl.stats()),
                    timeout, "every job to reach a final state", interval=0.05)


def submit_all(d, jobs):
    """Submits jobs pipelined on a new connection; all must be acknowledged
    with distinct job ids (digit strings), which are returned in order."""
    cl = d.client()
    answers = cl.pipeline(jobs)
    cl.close()
    check(len(answers) == len(jobs), "answers for every submit: %d/%d" % (len(answers), len(jobs)))
    bad = [a for a in answers if not a.get("ok")]
    check(not bad, "all submits acknowledged, first failure: %s" % (bad[:1],))
    ids = [a["job"] for a in answers]
    check(len(set(ids)) == len(ids), "job ids unique")
    check(all(isinstance(i, str) and i.isdigit() for i in ids), "job ids are digit strings")
    return ids


def count_markers(sends):
    """How often each job-<i> marker reached the API."""
    return collections.Counter(marker(s) for s in sends)


def run(test_fn):
    """Runs one test function with a fresh work dir; exit code for ctest."""
    name = test_fn.__name__
    wd = Workdir(name)
    t0 = time.monotonic()
    try:
        test_fn(wd)
    except SystemExit:  # a skip (77) or a usage error: nothing to keep
        wd.kill_all()
        wd.cleanup()
        raise
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        for f in sorted(os.listdir(wd.path)):
            if f.endswith(".err"):
                print("--- %s (tail)" % f)
                print("".join(open(wd.file(f)).readlines()[-30:]))
        print("work dir kept: %s" % wd.path)
        wd.kill_all()
        sys.exit(1)
    wd.kill_all()
    print("PASS %s (%.1fs)" % (name, time.monotonic() - t0))
    wd.cleanup()


class Faults:
    """Drives the faultfs shim (tests/faultfs/faultfs.c) of one daemon through
    its control file: pass env() to the Daemon, then set() lines such as
    "sync EIO 1 1" or "sync SLOW 300"."""

    def __init__(self, wd):
        self.ctl = wd.file("faultfs.ctl")
        self.set("off")

    def env(self):
        # An ASan build wants its runtime first in the library list; the
        # shim only wraps libc calls, so the order does not matter here.
        asan = os.environ.get("ASAN_OPTIONS", "")
        asan = (asan + ":" if asan else "") + "verify_asan_link_order=0"
        return {"LD_PRELOAD": FAULTFS, "AVP_FAULTFS": self.ctl, "ASAN_OPTIONS": asan}

    def set(self, line):
        tmp = self.ctl + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, self.ctl)  # a new inode: the shim sees the change

    def injected(self):
        try:
            with open(self.ctl + ".log") as f:
                return collections.Counter(line.split()[0] for line in f)
        except FileNotFoundError:
            return collections.Counter()
