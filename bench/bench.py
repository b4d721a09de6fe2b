#!/usr/bin/env python3
"""avenpingd benchmarks. Each prints a table with the machine it ran on and
writes its numbers as JSON.

  bench.py [options] BENCH...     BENCH: ingest dispatch campaign rate memory
                                  restart tls ceilings, or all

ingest    acknowledged (durable) jobs/s over the socket, 1 and 8 pipelining clients
dispatch  sends/s against nginx answering the v2 success JSON (each job's sending
          and sent durable), then p50/p99 submit -> request at a paced load
campaign  1,000,000 template jobs over 10 senders, no rate limit, submit to last sent
rate      50 senders at 80/s for 30 s, measured at the server
memory    the daemon's anonymous RSS with 1,000,000 jobs queued (LMDB's pages apart)
restart   start -> first send with 1,000,000 jobs queued
tls       dispatch over HTTPS (self-signed CA via ca_file), HTTP/2 and HTTP/1.1,
          with handshakes per 1,000 sends after warm-up
ceilings  the same machine's limits: bare LMDB (synced commits of 1,000 and of 1)
          and nginx under wrk (HTTP/1.1 keep-alive) / h2load (HTTP/2 over TLS)

Run through bench/run.sh, which builds a release tree and installs nginx, wrk
and h2load first. Needs the release build in $AVP_BUILD_DIR.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import avp  # noqa: E402
import stub  # noqa: E402

BIN = os.path.join(avp.BUILD, "bench")
SUBMIT = os.path.join(BIN, "avp-bench-submit")
LMDB = os.path.join(BIN, "avp-bench-lmdb")
HTTP = os.path.join(BIN, "avp-bench-http")

# Targets of issue #7 (checked here, never by the test suite).
TARGETS = {
    "ingest": 250000, "dispatch": 40000, "campaign_s": 45.0, "rate_err": 0.02,
    "anon_mib": 64.0, "restart_s": 2.0,
}


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


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Run:
    """One benchmark's environment: a work dir, nginx, a daemon."""

    def __init__(self, name, keep=False):
        self.wd = avp.Workdir("bench-" + name)
        self.keep = keep
        self.stub = None
        self.daemon = None

    def start_stub(self, **kw):
        self.stub = stub.Stub(self.wd.file("nginx"), **kw)
        return self.stub

    def start_daemon(self, api_base, config=None, state_dir=None, ca_file=None):
        # No rate limit; 64 connections for the runs that are not about
        # throughput (the throughput runs use THREADS: the default 256).
        cfg = {"log_level": "warn", "rate_per_number": 0, "max_inflight": 64,
               "max_inflight_per_number": 100000}
        if ca_file:
            cfg["ca_file"] = ca_file
        cfg.update(config or {})
        # AVP_BENCH_CONFIG="key=value,...": config keys for every daemon of
        # the run (experiments: http_threads, max_inflight...).
        for kv in filter(None, os.environ.get("AVP_BENCH_CONFIG", "").split(",")):
            k, _, v = kv.partition("=")
            cfg[k.strip()] = v.strip()
        # AVP_BENCH_PRELOAD: a library preloaded into the daemon alone (for
        # example another malloc), to compare allocators without a rebuild.
        preload = os.environ.get("AVP_BENCH_PRELOAD")
        env = {"LD_PRELOAD": preload} if preload else None
        self.daemon = avp.Daemon(self.wd, api_base, cfg, state_dir=state_dir, env=env).start()
        return self.daemon

    def close(self):
        if self.daemon is not None:
            try:
                self.daemon.stop()
            except Exception:  # noqa: BLE001 - killed below
                pass
        if self.stub is not None:
            self.stub.stop()
        self.wd.kill_all()
        if not self.keep:
            self.wd.cleanup()


# --- CPU per send, by role ----------------------------------------------------
# Read from /proc (utime + stime of each thread), so a run shows where its
# two cores went: the daemon's HTTP engine threads (avp-http-N), its event
# loop (the main thread), its store commits (libuv's pool threads, where
# the group commits run), nginx, and the rest of the machine.
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROLES = ("HTTP engine threads", "event loop", "store commits (libuv pool)", "nginx (the stub)",
         "rest of the machine")


def _stat_fields(path):
    with open(path) as f:
        s = f.read()
    return s[s.index("(") + 1:s.rindex(")")], s[s.rindex(")") + 2:].split()


def _proc_ticks(pid):
    """{tid: (comm, user + system ticks)} of one process's threads."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        try:
            comm, f = _stat_fields("/proc/%d/task/%s/stat" % (pid, t))
        except (OSError, ValueError):
            continue
        out[int(t)] = (comm, int(f[11]) + int(f[12]))
    return out


def _children(ppid):
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                _, f = _stat_fields("/proc/%s/stat" % p)
            except (OSError, ValueError):
                continue
            if int(f[1]) == ppid:
                kids.append(int(p))
    return kids


def _machine_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy (all but idle, iowait), all


def _tree_ticks(pid):
    """Ticks of a process and its children (nginx: master and workers)."""
    return sum(sum(t for _, t in _proc_ticks(p).values()) for p in [pid] + _children(pid))


def cpu_snapshot(daemon_pid, stub_pid):
    roles = dict.fromkeys(ROLES, 0)
    for tid, (comm, ticks) in _proc_ticks(daemon_pid).items():
        if comm.startswith("avp-http"):
            roles["HTTP engine threads"] += ticks
        elif tid == daemon_pid:
            roles["event loop"] += ticks
        elif not comm.startswith("jemalloc"):
            roles["store commits (libuv pool)"] += ticks
    roles["nginx (the stub)"] = _tree_ticks(stub_pid)
    busy, total = _machine_busy_ticks()
    return {"roles": roles, "busy": busy, "total": total}


def cpu_per_send(a, b, sends):
    """Microseconds of CPU per send between two snapshots, by role."""
    us = 1e6 / CLK_TCK / max(1, sends)
    roles = {k: (b["roles"][k] - a["roles"][k]) * us for k in ROLES[:-1]}
    busy = (b["busy"] - a["busy"]) * us
    roles[ROLES[-1]] = max(0.0, busy - sum(roles.values()))
    return {"roles": roles, "all": busy,
            "busy_share": (b["busy"] - a["busy"]) / max(1, b["total"] - a["total"])}


def cpu_rows(bench, cpu, cores):
    rows = [{"bench": bench, "name": "  CPU per send, whole machine (%.0f%% of %d cores busy)"
             % (100 * cpu["busy_share"], cores), "value": cpu["all"], "unit": "us CPU/send"}]
    for k in ROLES:
        rows.append({"bench": bench, "name": "    " + k, "value": cpu["roles"][k],
                     "unit": "us CPU/send"})
    return rows


def run_measured(argv, stub_pid):
    """Runs a load generator to its end: (stdout, its CPU seconds, nginx's
    CPU seconds over the same time)."""
    n0 = _tree_ticks(stub_pid)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    o = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    if p.returncode != 0:
        raise RuntimeError("%s exited with %d" % (argv[0], p.returncode))
    return o, ru.ru_utime + ru.ru_stime, (_tree_ticks(stub_pid) - n0) / CLK_TCK


def cpu_request_rows(what, client_s, nginx_s, requests):
    us = 1e6 / max(1, requests)
    return [{"bench": "ceilings", "name": "  CPU per request: %s" % what,
             "value": client_s * us, "unit": "us CPU/request"},
            {"bench": "ceilings", "name": "  CPU per request: nginx", "value": nginx_s * us,
             "unit": "us CPU/request"}]


def submit(d, jobs, clients=8, window=1000, **kw):
    args = [SUBMIT, "--socket", d.socket, "--clients", str(clients), "--jobs", str(jobs),
            "--window", str(window)]
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0 and not out.stdout:
        raise RuntimeError("avp-bench-submit failed: %s" % out.stderr)
    r = json.loads(out.stdout)
    if r["acked"] != jobs:
        raise RuntimeError("only %d of %d acknowledged: %s" % (r["acked"], jobs, out.stderr))
    return r


def wait_sent(cl, n, timeout, poll=0.02):
    """Polls stats until n jobs are sent (durable); returns (time, stats)."""
    deadline = time.time() + timeout
    while True:
        st = cl.stats()
        now = time.time()
        if st["counts"]["sent"] >= n:
            return now, st
        if now > deadline:
            raise RuntimeError("timed out: %d of %d sent" % (st["counts"]["sent"], n))
        time.sleep(poll)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] if xs else float("nan")


# --- the benchmarks -------------------------------------------------------------------------


def bench_ingest(a, out):
    # Each client keeps up to `window` submits unanswered; the daemon reads
    # up to 4,096 per connection before it pauses reading.
    for clients, window in ((1, 1000), (1, 4000), (8, 1000)):
        r = Run("ingest", a.keep)
        try:
            d = r.start_daemon("http://127.0.0.1:9")  # nothing is sent: scheduled an hour ahead
            s = submit(d, a.jobs, clients=clients, window=window, not_before=time.time() + 3600)
            out.append({"bench": "ingest", "name": "ingest, %d pipelining client%s, window %d"
                        % (clients, "s" if clients > 1 else "", window), "jobs": a.jobs,
                        "seconds": s["seconds"], "value": s["rate"], "unit": "acked jobs/s",
                        "target": ">= %d" % TARGETS["ingest"], "ok": s["rate"] >= TARGETS["ingest"]})
        finally:
            r.close()


def dispatch_run(r, n, label, bench, target=None, clients=8):
    """Preloads n jobs due at one instant, then times their sends (durable)."""
    d = r.daemon
    cl = d.client()
    start_at = time.time() + 1.0 + n / 100000.0
    submit(d, n, clients=clients, not_before=start_at)
    st0 = cl.stats()
    while time.time() < start_at:
        time.sleep(0.005)
    mid = None
    t0 = time.time()
    deadline = t0 + 60 + n / 2000.0
    while True:
        st = cl.stats()
        if mid is None and st["counts"]["sent"] >= n // 10:
            mid = st
            cpu0 = cpu_snapshot(d.proc.pid, r.stub.proc.pid)
        if st["counts"]["sent"] >= n:
            break
        if time.time() > deadline:
            raise RuntimeError("timed out: %d of %d sent" % (st["counts"]["sent"], n))
        time.sleep(0.02)
    cpu1 = cpu_snapshot(d.proc.pid, r.stub.proc.pid)
    secs = time.time() - start_at
    res = {"bench": bench, "name": label, "jobs": n, "seconds": secs, "value": n / secs,
           "unit": "sends/s", "commits": st["commits"] - st0["commits"],
           # from the first 10% sent to the last (the steady part)
           "cpu": cpu_per_send(cpu0, cpu1, st["counts"]["sent"] - mid["counts"]["sent"])}
    if target is not None:
        res["target"] = ">= %d" % target
        res["ok"] = res["value"] >= target
    # Handshakes once warm (after the first 10% of sends), per 1,000 sends.
    warm = max(1, st["requests"] - mid["requests"])
    res["handshakes"] = st["tlsHandshakes"] - st0["tlsHandshakes"]
    res["connects"] = st["httpConnects"] - st0["httpConnects"]
    res["handshakes_per_1000_warm"] = 1000.0 * (st["tlsHandshakes"] - mid["tlsHandshakes"]) / warm
    cl.close()
    return res


# The throughput runs (dispatch, campaign, tls): the HTTP engines on two
# threads of their own, whatever the machine's cores (the default,
# http_threads = auto, picks two from two cores on), with the default
# max_inflight (256: 128 connections per thread).
THREADS = {"http_threads": 2, "max_inflight": 256}


def bench_dispatch(a, out):
    r = Run("dispatch", a.keep)
    try:
        s = r.start_stub()
        r.start_daemon(s.base, THREADS)
        out.append(dispatch_run(r, a.dispatch_jobs,
                                "dispatch, HTTP/1.1 keep-alive to nginx, 2 HTTP threads",
                                "dispatch", TARGETS["dispatch"]))
        out.extend(cpu_rows("dispatch", out[-1]["cpu"], os.cpu_count()))
    finally:
        r.close()
    # Latency at a steady offered load: stamped jobs, paced, against an
    # nginx that logs each body (a run of its own: the echo module and the
    # log cost nginx CPU that the throughput run above should not pay).
    r = Run("latency", a.keep)
    try:
        s = r.start_stub(log=True)
        r.start_daemon(s.base, THREADS)
        n, rate = a.latency_jobs, a.latency_rate
        submit(r.daemon, n, clients=4, window=2000, stamp=1, rate=rate, first=10_000_000)
        cl = r.daemon.client()
        wait_sent(cl, n, 60 + n / 1000.0)
        cl.close()
        s.stop()  # flushes the log
        lat = []
        for t, body in s.entries():
            st = stub.stamp_of(body)
            if st is not None:
                lat.append(t - st[0])
        out.append({"bench": "dispatch", "name": "submit -> request at %d jobs/s, p50" % rate,
                    "jobs": len(lat), "value": pct(lat, 50) * 1000, "unit": "ms"})
        out.append({"bench": "dispatch", "name": "submit -> request at %d jobs/s, p99" % rate,
                    "jobs": len(lat), "value": pct(lat, 99) * 1000, "unit": "ms"})
    finally:
        r.close()
    if a.quick or a.main_only:
        return
    # The same with half the connections (max_inflight = 128), with the
    # engine on the loop thread (http_threads = 0), and with an operator's
    # `watch` of another campaign open (its events are not rendered).
    for name, cfg, label, watch in (
            ("dispatch128", dict(THREADS, max_inflight=128),
             "  the same with max_inflight = 128", False),
            ("dispatch-loop", {"http_threads": 0},
             "  the engine on the loop thread (http_threads = 0), 64 conns", False),
            ("dispatch-watch", THREADS, "  the same with a watch of another campaign open", True)):
        r = Run(name, a.keep)
        try:
            s = r.start_stub()
            d = r.start_daemon(s.base, cfg)
            w = None
            if watch:
                w = d.client()
                ans = w.request({"op": "watch", "campaign": "not-this-one"})
                if not ans.get("ok"):
                    raise RuntimeError("watch: %r" % ans)
            out.append(dispatch_run(r, a.dispatch_jobs, label, "dispatch"))
            if w is not None:
                w.close()
        finally:
            r.close()


def bench_campaign(a, out):
    r = Run("campaign", a.keep)
    try:
        s = r.start_stub()
        d = r.start_daemon(s.base, THREADS)
        n = a.campaign_jobs
        cl = d.client()
        t0 = time.time()
        sub = submit(d, n, clients=8, senders=10, template=1, campaign="bench-campaign")
        t_ingest = time.time() - t0
        t_end, st = wait_sent(cl, n, 120 + n / 2000.0, poll=0.05)
        cl.close()
        secs = t_end - t0
        out.append({"bench": "campaign", "name": "campaign of %d template jobs, 10 senders" % n,
                    "jobs": n, "seconds": secs, "value": secs, "unit": "s submit -> last sent",
                    "ingest_seconds": t_ingest, "ingest_rate": sub["rate"],
                    "rate": n / secs, "commits": st["commits"],
                    "target": "<= %.0f s" % TARGETS["campaign_s"],
                    "ok": secs <= TARGETS["campaign_s"] if n >= 1000000 else None})
    finally:
        r.close()


def bench_rate(a, out):
    senders, rate, secs = 50, 80, a.rate_seconds
    r = Run("rate", a.keep)
    try:
        s = r.start_stub(log=True)
        d = r.start_daemon(s.base, {"rate_per_number": rate})
        n = senders * rate * (secs + 3)  # more than fits: nobody runs dry
        start_at = time.time() + 1.0 + n / 100000.0
        submit(d, n, clients=8, senders=senders, not_before=start_at)
        # Submitting took past the start on a slow or busy machine: the
        # window then holds jobs still arriving (or none at all).
        late = time.time() - start_at
        while time.time() < start_at + secs + 0.5:
            time.sleep(0.1)
        d.stop()
        s.stop()
        per = {}
        for t, body in s.entries():
            if start_at <= t < start_at + secs:
                per.setdefault(stub.phone_of(body), []).append(t)
        means, max_cal, max_win = [], 0, 0
        for ts in per.values():
            means.append(len(ts) / float(secs))
            counts = {}
            for t in ts:
                counts[int(t)] = counts.get(int(t), 0) + 1
            # Whole calendar seconds only (the first and last are partial).
            full = [c for sec, c in counts.items() if start_at <= sec and sec + 1 <= start_at + secs]
            max_cal = max([max_cal] + full)
            ts.sort()
            j = 0
            for i in range(len(ts)):  # sliding window [t, t + 1 s)
                while ts[j] <= ts[i] - 1.0:
                    j += 1
                max_win = max(max_win, i - j + 1)
        if not means or late > 0:
            out.append({"bench": "rate", "name": "%d senders at %d/s for %d s: mean per sender"
                        % (senders, rate, secs), "value": 0, "unit": "sends/s",
                        "target": "%d +- 2%%" % rate, "ok": False,
                        "note": "not measured: submitting ended %.2f s after the start" % late})
            return
        lo, hi = min(means), max(means)
        err = max(abs(lo - rate), abs(hi - rate)) / rate
        out.append({"bench": "rate", "name": "%d senders at %d/s for %d s: mean per sender"
                    % (senders, rate, secs), "jobs": sum(len(v) for v in per.values()),
                    "value": sum(means) / max(1, len(means)), "unit": "sends/s",
                    "min_mean": lo, "max_mean": hi, "senders_seen": len(per),
                    "target": "%d +- 2%%" % rate, "ok": len(per) == senders and
                    err <= TARGETS["rate_err"]})
        out.append({"bench": "rate", "name": "  most sends of one sender in a calendar second",
                    "value": max_cal, "unit": "sends", "target": "<= %d" % rate,
                    "ok": max_cal <= rate})
        out.append({"bench": "rate", "name": "  most sends of one sender in any 1 s (sliding)",
                    "value": max_win, "unit": "sends"})
    finally:
        r.close()


def rss(pid):
    """RssAnon / RssFile / RssShmem (KiB) from /proc/PID/status."""
    v = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("RssAnon", "RssFile", "RssShmem", "VmRSS", "VmHWM"):
                v[k] = int(rest.split()[0])
    return v


def bench_memory_restart(a, out, which):
    """Queues a.million jobs due a little later, measures the daemon's memory
    with them queued, stops it, waits until they are due, starts it again and
    times the first request nginx sees."""
    r = Run("memory", a.keep)
    try:
        s = r.start_stub(log=True)
        d = r.start_daemon(s.base)
        n = a.million
        # Late enough that none is due before the restart (the memory part
        # settles for a few seconds first); checked below.
        due = time.time() + (4.0 if a.quick else 8.0) + n / 80000.0
        t0 = time.time()
        submit(d, n, clients=8, senders=10, not_before=due)
        t_ingest = time.time() - t0
        cl = d.client()
        avp.wait_for(lambda: cl.stats()["commitBacklog"] == 0, 30, "the last commit")
        st = cl.stats()
        cl.close()
        # Right after the burst, and once settled: the daemon's allocator
        # returns the burst's freed pages within about a second
        # (daemon/jemalloc_conf.c); what stays is what 1M queued jobs cost.
        time.sleep(0.5)
        early = rss(d.proc.pid)
        time.sleep(2.0)
        m = rss(d.proc.pid)
        if "memory" in which:
            anon = m["RssAnon"] / 1024.0
            out.append({"bench": "memory", "name": "anonymous RSS, %d jobs queued (%d in memory), settled"
                        % (n, st["active"]), "jobs": n, "value": anon, "unit": "MiB",
                        "file_mib": m["RssFile"] / 1024.0, "shmem_mib": m["RssShmem"] / 1024.0,
                        "peak_rss_mib": m["VmHWM"] / 1024.0,
                        "store_used_mib": st["storeUsedBytes"] / 1048576.0,
                        "ingest_seconds": t_ingest,
                        "target": "<= %.0f MiB" % TARGETS["anon_mib"],
                        "ok": anon <= TARGETS["anon_mib"]})
            out.append({"bench": "memory", "name": "  anonymous RSS 0.5 s after the last commit",
                        "value": early["RssAnon"] / 1024.0, "unit": "MiB"})
            out.append({"bench": "memory", "name": "  LMDB pages mapped (RssFile)", "value":
                        m["RssFile"] / 1024.0, "unit": "MiB"})
        if "restart" not in which:
            return
        cl = d.client()
        sent = cl.stats()["counts"]["sent"]
        cl.close()
        if sent != 0:
            raise RuntimeError("%d jobs were sent before the restart: not a cold start" % sent)
        d.stop()
        s.stop()
        # Unbuffered log: the first line is there as soon as it is answered.
        # A fresh one: only the restarted daemon's requests count.
        if os.path.exists(s.log):
            os.unlink(s.log)
        s = r.start_stub(log=True, buffered=False)
        while time.time() < due + 0.2:
            time.sleep(0.05)
        d2 = avp.Daemon(r.wd, s.base, {"log_level": "warn", "rate_per_number": 0,
                                       "max_inflight": 64, "max_inflight_per_number": 100000},
                        state_dir=d.state_dir, name="daemon2")
        t_start = time.time()
        d2.start(wait=False)
        r.daemon = d2
        first = None
        deadline = time.time() + 30
        while first is None and time.time() < deadline:
            time.sleep(0.01)
            if os.path.exists(s.log) and os.path.getsize(s.log) > 0:
                with open(s.log, "rb") as f:
                    first = float(f.readline().split(b" ", 1)[0])
        if first is None:
            raise RuntimeError("no request within 30 s of the restart")
        secs = first - t_start
        out.append({"bench": "restart", "name": "restart -> first send, %d jobs queued" % n,
                    "jobs": n, "value": secs, "unit": "s", "target": "<= %.0f s"
                    % TARGETS["restart_s"], "ok": secs <= TARGETS["restart_s"]})
    finally:
        r.close()


def bench_tls(a, out):
    for proto in ("h2", "h1"):
        r = Run("tls-" + proto, a.keep)
        try:
            s = r.start_stub(tls=proto)
            r.start_daemon(s.base, dict(THREADS, http2="yes" if proto == "h2" else "no"),
                           ca_file=s.ca_file)
            acc0 = s.accepted()
            res = dispatch_run(r, a.tls_jobs, "dispatch over TLS, %s" %
                               ("HTTP/2 (multiplexed)" if proto == "h2" else "HTTP/1.1 keep-alive"),
                               "tls")
            res["server_connections"] = s.accepted() - acc0 - 1
            out.append(res)
            out.append({"bench": "tls", "name": "  TLS handshakes (all / per 1,000 sends warm)",
                        "value": res["handshakes"], "unit": "handshakes / %.2f"
                        % res["handshakes_per_1000_warm"]})
        finally:
            r.close()


WRK_LUA = """wrk.method = "POST"
wrk.body = '{"phoneNumberId":"1000001","to":"+15551234567","text":"hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer test-token"
"""


def bench_ceilings(a, out):
    tmp = tempfile.mkdtemp(prefix="avp-bench-ceil-")
    try:
        for per, n in ((1000, a.lmdb_records), (1, a.lmdb_records // 200)):
            d = os.path.join(tmp, "lmdb-%d" % per)
            os.mkdir(d)
            r = json.loads(subprocess.run([LMDB, d, str(n), str(per)], capture_output=True,
                                          text=True, check=True).stdout)
            out.append({"bench": "ceilings", "name": "bare LMDB, synced commits of %d" % per,
                        "jobs": n, "seconds": r["seconds"], "value": r["rate"],
                        "unit": "records/s"})
            shutil.rmtree(d)
        lua = os.path.join(tmp, "post.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA)
        if shutil.which("wrk"):
            s = stub.Stub(os.path.join(tmp, "nginx"))
            try:
                o, cs, ns = run_measured(["wrk", "-t1", "-c64", "-d%ds" % a.ceiling_seconds,
                                          "-s", lua, s.base + "/v2/messages/send/text"],
                                         s.proc.pid)
                rps = float([ln for ln in o.splitlines() if ln.startswith("Requests/sec")][0]
                            .split()[1])
                out.append({"bench": "ceilings", "name": "nginx, wrk, HTTP/1.1 keep-alive, 64 conns",
                            "value": rps, "unit": "requests/s"})
                out.extend(cpu_request_rows("wrk", cs, ns, rps * a.ceiling_seconds))
            finally:
                s.stop()
        # The daemon's own HTTP engines alone, 64 POSTs in flight to the same
        # nginx, on the loop thread and on two engine threads (http_threads):
        # the most any dispatch through libcurl multi can reach here.
        if os.path.exists(HTTP):
            s = stub.Stub(os.path.join(tmp, "nginx-engine"))
            try:
                for threads, what in ((0, "engine alone, on its loop"),
                                      (2, "engines alone, 2 threads")):
                    o, cs, ns = run_measured([HTTP, s.base, "/v2/messages/send/text", "64",
                                              str(a.ceiling_seconds), str(threads)], s.proc.pid)
                    r = json.loads(o)
                    out.append({"bench": "ceilings",
                                "name": "nginx, the daemon's HTTP %s, 64 conns" % what,
                                "seconds": r["seconds"], "value": r["rate"],
                                "unit": "requests/s", "connects": r["connects"]})
                    out.extend(cpu_request_rows("the HTTP engine process", cs, ns,
                                                r["requests"]))
            finally:
                s.stop()
        if shutil.which("h2load"):
            s = stub.Stub(os.path.join(tmp, "nginx-tls"), tls="h2")
            try:
                body = os.path.join(tmp, "body.json")
                with open(body, "w") as f:
                    f.write('{"phoneNumberId":"1000001","to":"+15551234567","text":"hello"}')
                o = subprocess.run(["h2load", "-D", str(a.ceiling_seconds), "-c1", "-m256",
                                    "-d", body, "-H", "Content-Type: application/json",
                                    s.base + "/v2/messages/send/text"],
                                   capture_output=True, text=True, check=True).stdout
                line = [ln for ln in o.splitlines() if ln.startswith("finished in")][0]
                rps = float(line.split(",")[1].split()[0])
                out.append({"bench": "ceilings", "name": "nginx, h2load, HTTP/2 over TLS, 1 conn",
                            "value": rps, "unit": "requests/s"})
            finally:
                s.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ALL = ["ceilings", "ingest", "dispatch", "campaign", "rate", "memory", "restart", "tls"]


def print_table(m, results, load0, load1):
    print("machine: %d cores, %s, Linux %s; load average %.2f before, %.2f after"
          % (m["cores"], m["cpu"], m["kernel"], load0[0], load1[0]))
    print("%-58s %14s %-22s %-12s %s" % ("benchmark", "result", "unit", "target", ""))
    for r in results:
        v = r["value"]
        vs = "%.0f" % v if abs(v) >= 100 else "%.2f" % v
        ok = r.get("ok")
        print("%-58s %14s %-22s %-12s %s" % (r["name"], vs, r["unit"], r.get("target", ""),
                                              "" if ok is None else ("ok" if ok else "MISSED")))


def main():
    ap = argparse.ArgumentParser(description="avenpingd benchmarks",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="*", default=["all"], help="benchmarks to run (default: all)")
    ap.add_argument("--jobs", type=int, default=300000, help="jobs per ingest run")
    ap.add_argument("--dispatch-jobs", type=int, default=300000)
    ap.add_argument("--latency-jobs", type=int, default=100000)
    ap.add_argument("--latency-rate", type=int, default=10000, help="jobs/s of the latency run")
    ap.add_argument("--campaign-jobs", type=int, default=1000000)
    ap.add_argument("--rate-seconds", type=int, default=30)
    ap.add_argument("--million", type=int, default=1000000, help="jobs queued (memory, restart)")
    ap.add_argument("--tls-jobs", type=int, default=200000)
    ap.add_argument("--ceiling-seconds", type=int, default=5)
    ap.add_argument("--lmdb-records", type=int, default=1000000)
    ap.add_argument("--main-only", action="store_true",
                    help="dispatch: the main row alone, without its variants (experiments)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers mean nothing")
    ap.add_argument("--json", help="write results here (default: $AVP_BUILD_DIR/bench/results.json)")
    ap.add_argument("--keep", action="store_true", help="keep the work dirs")
    a = ap.parse_args()
    which = ALL if "all" in a.bench else a.bench
    if not os.path.exists(stub.NGINX) or not os.path.exists(stub.ECHO_MODULE):
        if a.quick:
            print("SKIP: nginx or its echo module is not installed (scripts/deps.sh --bench)")
            return 77
        sys.exit("bench: nginx and its echo module are needed: scripts/deps.sh --bench")
    for b in which:
        if b not in ALL:
            ap.error("unknown benchmark %r (one of %s, all)" % (b, " ".join(ALL)))
    if a.quick:
        a.jobs, a.dispatch_jobs, a.latency_jobs, a.latency_rate = 2000, 2000, 300, 2000
        a.campaign_jobs, a.rate_seconds, a.million, a.tls_jobs = 3000, 1, 3000, 1000
        a.ceiling_seconds, a.lmdb_records = 1, 20000
    results = []
    load0 = loadavg()
    for b in which:
        if b == "ingest":
            bench_ingest(a, results)
        elif b == "dispatch":
            bench_dispatch(a, results)
        elif b == "campaign":
            bench_campaign(a, results)
        elif b == "rate":
            bench_rate(a, results)
        elif b == "memory" or (b == "restart" and "memory" not in which):
            bench_memory_restart(a, results, which)
        elif b == "tls":
            bench_tls(a, results)
        elif b == "ceilings":
            bench_ceilings(a, results)
    load1 = loadavg()
    m = machine()
    print_table(m, results, load0, load1)
    path = a.json or os.path.join(BIN, "results.json")
    with open(path, "w") as f:
        json.dump({"machine": m, "time": time.time(), "loadavg_before": load0,
                   "loadavg_after": load1, "command": " ".join(sys.argv), "results": results},
                  f, indent=1)
    print("results: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
