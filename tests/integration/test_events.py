#!/usr/bin/env python3
"""What the daemon tells the outside without being asked (daemon/events.c):
the metrics file, against real processes.

- metrics_oldest_saturated: with more jobs in flight than the 512 due
  entries the metrics walk used to look at (max_inflight 600, an API that
  does not answer), the jobs waiting behind them are reported:
  oldest_due_job_age_seconds grows instead of reading 0 ("none due") exactly
  while the daemon is saturated.
- metrics_slow_write: the metrics file is written off the event loop. Its
  temporary file is a FIFO that nobody reads, so opening it blocks (the
  stand-in for a disk that does not answer): the daemon still starts and
  answers, and once the FIFO is read the file is written as usual. Before,
  the write ran on the loop and the daemon never answered a request.

- watch_after_commit: a watch event says a state the store has: right after
  each `sent` event, a `get` of the job (another connection) says `sent`.
  Before, events went out when the change was queued for its commit, and
  `get` still said `sending` for some.
- watch_sent_survives_kill: a job whose `sent` event a watcher saw is never
  sent again after a kill -9 and a restart (at-least-once resends only what
  may have been in flight). Before, some came back `sending` and went to the
  API a second time.
- watch_expired_once: a job changes state once, so a watcher hears of it
  once. Jobs of a large batch wait in a FIFO on their way into memory
  (dispatch_activate_later); a refill that ran meanwhile (a resume asked
  for one, a cancel's commit held it until that batch) loaded them from the
  store, they expired there, and the FIFO then put them into memory again:
  each expired a second time, two `expired` events (a job sent from there
  was sent twice).
- watch_events_at_stop: requests that finish while a SIGTERM waits for them
  reach the watchers: every `sent` of the stop's last commits is written
  before the stream closes. Before, the streams were closed at once after
  the drain, dropping what they had not written yet (2 of 20 seen).

Usage: test_events.py CASE   (see CASES at the bottom)
"""
import collections
import json
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import avp  # noqa: E402
from avp import check, wait_for  # noqa: E402


def metric(path, name):
    """The value of the unlabelled sample `name` in the metrics file, or
    None while the file is missing."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    check(m is not None, "sample %s in the metrics file" % name)
    return float(m.group(1))


def metrics_oldest_saturated(wd):
    api = avp.FakeAPI(wd)
    api.control(latency_ms=120000)  # no answer for the length of the test
    mfile = wd.file("avenpingd.prom")
    n, inflight = 2000, 600
    d = avp.Daemon(wd, api.base, config={"metrics_file": mfile, "metrics_interval_ms": 100,
                                         "max_inflight": inflight,
                                         "max_inflight_per_number": inflight}).start()
    cl = d.client()
    avp.submit_all(d, [avp.text_job(i, sender="1000001") for i in range(n)])
    wait_for(lambda: cl.stats()["httpInflight"] == inflight, 30, "%d requests on the wire"
             % inflight)
    st = cl.stats()
    check(st["counts"]["queued"] == n - inflight, "the rest waits: %s" % st["counts"])
    # Waiting since their submit: the age grows past a second.
    wait_for(lambda: (metric(mfile, "avenping_oldest_due_job_age_seconds") or 0) >= 1.0, 20,
             "oldest_due_job_age_seconds to show the %d waiting jobs (reads %s)"
             % (n - inflight, metric(mfile, "avenping_oldest_due_job_age_seconds")))
    cl.close()
    api.stop()  # releases the delayed answers
    d.kill9()


def metrics_slow_write(wd):
    api = avp.FakeAPI(wd)
    mfile = wd.file("avenpingd.prom")
    os.mkfifo(mfile + ".tmp")
    d = avp.Daemon(wd, api.base, config={"metrics_file": mfile, "metrics_interval_ms": 100})
    d.start()  # waits for a ping to be answered
    cl = d.client()
    check(cl.request({"op": "ping"}).get("ok") is True, "answers while the write hangs")
    ids = avp.submit_all(d, [avp.text_job(0)])
    wait_for(lambda: cl.request({"op": "get", "job": ids[0]})["job"]["state"] == "sent", 30,
             "the job sent while the write hangs")
    # The reader comes: the write that waited goes through, then the next
    # ones replace the file as usual.
    got = []
    reader = threading.Thread(target=lambda: got.append(open(mfile + ".tmp", "rb").read()))
    reader.start()
    reader.join(30)
    check(not reader.is_alive() and got and b"avenping_build_info" in got[0],
          "the waiting write completed into the FIFO")
    wait_for(lambda: os.path.isfile(mfile) and not os.path.exists(mfile + ".tmp")
             and metric(mfile, "avenping_submitted_total") == 1, 20,
             "the metrics file written again")
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def open_watch(d):
    w = d.client()
    w.send_raw(b'{"op":"watch","id":"w"}\n')
    check(w.read_line().get("ok") is True, "watch answered ok")
    return w


def watch_after_commit(wd):
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    w = open_watch(d)
    cl = d.client()
    n = 400
    avp.submit_all(d, [avp.text_job(i) for i in range(n)])
    seen, early = 0, []
    while seen < n:
        ev = w.read_line()
        if ev.get("event") != "job" or ev["state"] not in ("sending", "sent"):
            continue
        state = cl.request({"op": "get", "job": ev["job"]})["job"]["state"]
        if ev["state"] == "sent":
            seen += 1
            if state != "sent":
                early.append((ev["job"], state))
        elif state not in ("sending", "sent"):
            early.append((ev["job"], "sending event, stored " + state))
    check(not early, "%d events ahead of their commit, first: %s" % (len(early), early[:3]))
    w.close()
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def watch_sent_survives_kill(wd):
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base).start()
    w = open_watch(d)
    n, watched = 600, 60
    ids = avp.submit_all(d, [avp.text_job(i) for i in range(n)])
    marker_of = {j: "job-%d" % i for i, j in enumerate(ids)}
    sent = []
    while len(sent) < watched:
        ev = w.read_line()
        if ev.get("event") == "job" and ev["state"] == "sent":
            sent.append(ev["job"])
    d.kill9()  # at once: the daemon keeps sending meanwhile
    w.close()
    d2 = avp.Daemon(wd, api.base, state_dir=d.state_dir, name="daemon2").start()
    cl = d2.client()
    avp.wait_all_final(cl, 60)
    cl.close()
    counts = avp.count_markers(api.sends())
    twice = [j for j in sent if counts[marker_of[j]] != 1]
    check(not twice, "%d of the %d jobs watched as sent reached the API again (first %s: %d)"
          % (len(twice), watched, twice[:1], counts[marker_of[twice[0]]] if twice else 0))
    check(all(counts["job-%d" % i] >= 1 for i in range(n)), "every job sent")
    check(d2.stop() == 0, "SIGTERM exits 0")
    api.stop()


def watch_campaign_filter(wd):
    """A watch of one campaign gets every state change of that campaign's
    jobs, named with it, and nothing of other campaigns or of jobs without
    one - whether the job is in memory when its state changes (sends) or
    only in the store (a cancel of waiting jobs)."""
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, {"rate_per_number": 0, "pair_rate_interval_ms": 0}).start()
    w = d.client()
    w.send_raw(b'{"op":"watch","id":"w","campaign":"a"}\n')
    check(w.read_line().get("ok") is True, "watch answered ok")
    cl = d.client()
    n = 200
    jobs = []
    for i in range(n):
        c = ("a", "b", None)[i % 3]
        j = avp.text_job(i, to="+1668%07d" % i)
        if c is not None:
            j["campaign"] = c
        jobs.append(j)
    ids = avp.submit_all(d, jobs)
    in_a = {ids[i] for i in range(n) if i % 3 == 0}
    later = avp.submit_all(d, [avp.text_job(n + i, to="+1669%07d" % i, campaign="a",
                                            notBefore=time.time() + 3600) for i in range(20)])
    wait_all_final_but(cl, len(later))
    r = cl.request({"op": "cancel", "campaign": "a"})
    check(r.get("cancelled") == len(later), "cancel: %s" % r)
    sent, cancelled = set(), set()
    while len(sent) < len(in_a) or len(cancelled) < len(later):
        ev = w.read_line()
        if ev.get("event") != "job":
            continue
        check(ev["campaign"] == "a" and (ev["job"] in in_a or ev["job"] in later),
              "only campaign a's events: %s" % ev)
        if ev["state"] == "sent":
            sent.add(ev["job"])
        elif ev["state"] == "cancelled":
            cancelled.add(ev["job"])
    check(sent == in_a and cancelled == set(later), "every sent and cancelled event of a")
    w.close()
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def watch_events_at_stop(wd):
    api = avp.FakeAPI(wd, "--latency-ms", "1500")
    d = avp.Daemon(wd, api.base, {"max_inflight": 20}).start()
    w = open_watch(d)
    n = 20
    ids = avp.submit_all(d, [avp.text_job(i) for i in range(n)])
    wait_for(lambda: api.stats()["requests"] >= n, 30, "every request at the API")
    d.proc.send_signal(signal.SIGTERM)
    sent = set()
    try:
        while True:
            ev = w.read_line(timeout=20)
            if ev.get("event") == "job" and ev["state"] == "sent":
                sent.add(ev["job"])
    except EOFError:
        pass  # the daemon closed the stream: all it had is read
    w.close()
    check(d.proc.wait(20) == 0, "SIGTERM exits 0")
    check("store flushed;" in d.stderr(), "the stop flushed the store")
    check(sent == set(ids), "the watcher saw %d of the %d jobs sent during the stop"
          % (len(sent), n))
    api.stop()


def watch_expired_once(wd):
    faults = avp.Faults(wd)
    api = avp.FakeAPI(wd)
    d = avp.Daemon(wd, api.base, env=faults.env()).start()
    w = open_watch(d)
    cl, st = d.client(), d.client()
    later = time.time() + 3600
    held = avp.submit_all(d, [avp.text_job(0, notBefore=later),
                              avp.text_job(1, notBefore=later)])
    # While a slow commit runs, the next one gathers, each on a connection
    # of its own (a request other than a submit waits for the answers
    # before it on its connection): a cancel of a job in memory (no refill
    # until it is durable), a resume (a refill is due once it is), and
    # enough submits for the FIFO, all past their expiresAt.
    faults.set("sync SLOW 300")
    conns = [d.client() for _ in range(3)]
    backlog = cl.stats()["commitBacklog"]
    conns[0].send_raw(b'{"op":"pause","campaign":"trigger","id":"t"}\n')
    wait_for(lambda: st.stats()["commitBacklog"] > backlog, 10, "the slow commit started")
    conns[1].send_raw(('{"op":"cancel","job":"%s","id":"c"}\n' % held[0]).encode())
    wait_for(lambda: st.stats()["commitBacklog"] > backlog + 1, 10, "the cancel queued")
    conns[2].send_raw(b'{"op":"resume","campaign":"none-such","id":"r"}\n')
    n = 400
    jobs = [avp.text_job(10 + i, expiresAt=1, id=i) for i in range(n)]
    cl.send_raw("".join(json.dumps(x) + "\n" for x in jobs).encode())
    answers = [cl.read_line() for _ in jobs]
    faults.set("off")
    check(all(c.read_line().get("ok") is True for c in conns), "pause, cancel and resume")
    check(all(a.get("ok") for a in answers), "all answered ok: %s"
          % [a for a in answers if not a.get("ok")][:1])
    ids = {a["job"] for a in answers}
    wait_for(lambda: cl.stats()["counts"]["expired"] == n, 20, "every job expired")
    # Events go out in commit order: once this cancel is heard, every event
    # recorded before it was.
    check(cl.request({"op": "cancel", "job": held[1]}).get("cancelled") == 1, "cancel")
    expired = collections.Counter()
    while True:
        ev = w.read_line()
        if ev.get("event") != "job":
            continue
        if ev["job"] == held[1] and ev["state"] == "cancelled":
            break
        if ev["state"] == "expired":
            expired[ev["job"]] += 1
    twice = sorted(j for j, c in expired.items() if c > 1)
    check(not twice, "%d of %d jobs expired twice (first %s)" % (len(twice), n, twice[:1]))
    check(set(expired) == ids, "every job's expiry heard: %d of %d" % (len(expired), n))
    check(api.sends() == [], "nothing sent")
    w.close()
    for c in conns + [st, cl]:
        c.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()

def wait_all_final_but(cl, waiting):
    """Waits until every job is final except `waiting` scheduled ones."""
    wait_for(lambda: avp.unfinished(cl.stats()) == waiting, 60, "the due jobs final")


CASES = {f.__name__: f for f in (metrics_oldest_saturated, metrics_slow_write,
                                 watch_after_commit, watch_sent_survives_kill,
                                 watch_campaign_filter, watch_events_at_stop,
                                 watch_expired_once)}

if __name__ == "__main__":
    case = CASES.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if case is None:
        sys.exit("usage: test_events.py %s" % "|".join(CASES))
    avp.run(case)
