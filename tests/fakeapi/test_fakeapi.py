#!/usr/bin/env python3
"""Smoke test of avp-fakeapi (standard library only).

usage: python3 test_fakeapi.py /path/to/avp-fakeapi

Starts the server on an ephemeral port in a temp dir, checks routes, auth,
validation, every fault switch, the log and the counters, keep-alive and
non-blocking latency, then stops it with SIGTERM and expects exit code 0.
Prints an informal requests/s figure (not asserted).
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "test-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


class Server:
    def __init__(self, binary, tmp, *args):
        self.tmp = tmp
        self.port_file = os.path.join(tmp, "port")
        self.log = os.path.join(tmp, "sends.log")
        self.stderr = open(os.path.join(tmp, "stderr"), "w+")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--port-file", self.port_file, "--log", self.log,
             "--seed", "42", *args],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        # The PORT line is printed after the port file is in place: await it, no polling.
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stderr.seek(0)
            raise SystemExit("server did not start: %r %s" % (line, self.stderr.read()))
        self.port = int(line.split()[1])
        with open(self.port_file) as f:
            check(int(f.read().strip()) == self.port, "port file holds the port")

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers dict, parsed JSON or raw bytes)."""
        own = conn is None
        c = conn or self.conn()
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            raw = r.read()
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if own:
                c.close()

    def control(self, **switches):
        st, _, data = self.request("POST", "/_fake/control", switches)
        check(st == 200 and data == {"ok": True}, "control %r accepted" % switches)

    def stats(self):
        st, _, data = self.request("GET", "/_fake/stats")
        check(st == 200, "stats answered")
        return data

    def log_lines(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(l) for l in f]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "timeout"
        self.stderr.seek(0)
        err = self.stderr.read()
        return rc, err


def send(srv, route="/v2/messages/send/text", headers=AUTH, conn=None, **fields):
    body = {"phoneNumberId": "1000001", "to": "+15550001111", "text": "hello"}
    body.update(fields)
    for k in [k for k, v in body.items() if v is None]:
        del body[k]
    return srv.request("POST", route, body, headers, conn)


def expect_error(res, status, code, what, meta=None):
    st, _, data = res
    ok = check(st == status and isinstance(data, dict) and data.get("success") is False
               and data.get("error") == code and isinstance(data.get("message"), str),
               "%s -> %d %s (got %d %r)" % (what, status, code, st, data))
    if ok and meta is not None:
        err = (data.get("details") or {}).get("error") or {}
        check(err.get("code") == meta and err.get("type") == "OAuthException"
              and "fbtrace_id" in err and "details" in (err.get("error_data") or {}),
              "%s carries Meta code %d in details (got %r)" % (what, meta, data.get("details")))
    return data


def expect_dropped(srv, what, **fields):
    """A send whose connection must be closed without an answer."""
    c = srv.conn()
    try:
        send(srv, conn=c, **fields)
        check(False, what + ": connection dropped")
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        c.close()


def test_routes(srv):
    st, _, data = srv.request("GET", "/v2/health")
    check(st == 200 and data == {"success": True, "data": {"ok": True}}, "health without auth")
    st, _, data = srv.request("GET", "/v2/version")
    check(st == 200 and data["success"] and "version" in data["data"], "version without auth")

    expect_error(srv.request("GET", "/v2/me"), 401, "UNAUTHORIZED", "me without token")
    expect_error(srv.request("GET", "/v2/me", headers={"Authorization": "Bearer nope"}),
                 401, "UNAUTHORIZED", "me with wrong bearer")
    expect_error(srv.request("GET", "/v2/me", headers={"X-API-Token": "nope"}),
                 401, "UNAUTHORIZED", "me with wrong X-API-Token")
    expect_error(send(srv, headers={}), 401, "UNAUTHORIZED", "send without token")
    for hdrs in (AUTH, {"X-API-Token": TOKEN}):
        st, _, data = srv.request("GET", "/v2/me", headers=hdrs)
        check(st == 200 and data["data"]["phoneNumberIds"][0] == "1000001"
              and len(data["data"]["phoneNumberIds"]) == 10 and data["data"]["wabaId"],
              "me with %s" % list(hdrs))
    expect_error(srv.request("GET", "/v2/nope", headers=AUTH), 404, "NOT_FOUND", "unknown route")
    expect_error(srv.request("GET", "/v2/messages/send/text", headers=AUTH), 404, "NOT_FOUND",
                 "GET on a send route")


def test_validation(srv):
    expect_error(send(srv, phoneNumberId="999"), 403, "FORBIDDEN", "foreign phoneNumberId")
    expect_error(send(srv, phoneNumberId=None), 400, "VALIDATION_ERROR", "missing phoneNumberId")
    expect_error(send(srv, to=None), 400, "VALIDATION_ERROR", "missing to")
    expect_error(send(srv, to="abc"), 400, "VALIDATION_ERROR", "to without digits")
    expect_error(send(srv, text=None), 400, "VALIDATION_ERROR", "text missing")
    expect_error(send(srv, text=5), 400, "VALIDATION_ERROR", "text not a string")
    media = "/v2/messages/send/media"
    expect_error(send(srv, media, media={"type": "image"}), 400, "VALIDATION_ERROR",
                 "media without mediaId")
    expect_error(send(srv, media, media={"type": "gif", "mediaId": "m1"}), 400,
                 "VALIDATION_ERROR", "media with a bad type")
    st, _, _ = send(srv, media, media={"type": "document", "mediaId": "m1"})
    check(st == 200, "valid media send")
    tpl = "/v2/templates/send"
    expect_error(send(srv, tpl), 400, "VALIDATION_ERROR", "template without templateName")
    expect_error(send(srv, tpl, templateName="missing_promo"), 404, "NOT_FOUND",
                 "unknown template")
    for route in ("/v2/messages/send/location", "/v2/messages/send/interactive",
                  "/v2/messages/send"):
        check(send(srv, route)[0] == 200, "send on " + route)
    expect_error(srv.request("POST", "/v2/messages/send/text", b"{not json", AUTH), 500,
                 "INTERNAL_ERROR", "body not JSON")
    expect_error(srv.request("POST", "/v2/messages/send/text", b"[1,2]", AUTH), 500,
                 "INTERNAL_ERROR", "body not an object")
    big = json.dumps({"phoneNumberId": "1000001", "to": "1", "text": "x" * (2 * 1024 * 1024)})
    expect_error(srv.request("POST", "/v2/messages/send/text", big, AUTH), 400,
                 "VALIDATION_ERROR", "body over 2 MB")
    # Just under the limit is accepted.
    body = {"phoneNumberId": "1000001", "to": "1", "text": ""}
    body["text"] = "y" * (2 * 1024 * 1024 - len(json.dumps(body)))
    check(srv.request("POST", "/v2/messages/send/text", body, AUTH)[0] == 200,
          "body of exactly 2 MB accepted")


def test_success_and_log(srv):
    before = len(srv.log_lines())
    st, _, data = send(srv, to="+1 (555) 000-2222", text="log me", contextMessageWamid="w.1")
    check(st == 200 and data.get("success") is True, "text send succeeds")
    d = data["data"]
    check(d["messaging_product"] == "whatsapp", "messaging_product")
    check(d["contacts"] == [{"input": "+1 (555) 000-2222", "wa_id": "15550002222"}], "contacts")
    wamid = d["messages"][0]["id"]
    check(wamid.startswith("wamid.") and d["messages"][0]["message_status"] == "accepted",
          "wamid and message_status")
    lines = srv.log_lines()
    check(len(lines) == before + 1, "one log line per accepted send")
    last = lines[-1]
    check(last["seq"] == before + 1 and last["route"] == "/v2/messages/send/text"
          and last["phoneNumberId"] == "1000001" and last["to"] == "15550002222"
          and last["wamid"] == wamid and last["body"]["text"] == "log me"
          and last["body"]["contextMessageWamid"] == "w.1"
          and abs(last["t"] - time.time()) < 60, "log line content %r" % last)
    st, _, data2 = send(srv)
    check(data2["data"]["messages"][0]["id"] != wamid, "wamids are unique")
    seqs = [l["seq"] for l in srv.log_lines()]
    check(seqs == list(range(1, len(seqs) + 1)), "log seq counts from 1 without gaps")


def test_faults(srv):
    srv.control(fail_rate=1.0, fail_meta_code=131016)
    n = len(srv.log_lines())
    expect_error(send(srv), 500, "INTERNAL_ERROR", "fail_rate 1.0", meta=131016)
    check(len(srv.log_lines()) == n, "failed send not logged")
    srv.control(fail_rate=0, fail_meta_code=131000)
    check(send(srv)[0] == 200, "fail_rate 0 sends again")

    srv.control(rate_limit=1)
    results = [send(srv, phoneNumberId="1000002") for _ in range(5)]
    limited = [r for r in results if r[0] == 429]
    check(results[0][0] == 200 and limited, "rate_limit 1/s gives 429 (got %r)"
          % [r[0] for r in results])
    if limited:
        expect_error(limited[0], 429, "RATE_LIMITED", "rate limited send", meta=130429)
        check(limited[0][1].get("retry-after") == "1", "Retry-After: 1")
    check(send(srv, phoneNumberId="1000003")[0] == 200, "rate limit is per phoneNumberId")
    st = srv.stats()["senders"]["1000002"]
    check(st["rejected_429"] == len(limited) and st["accepted"] == 5 - len(limited),
          "per-sender 429 counters %r" % st)
    srv.control(rate_limit=0)

    srv.control(pair_interval_ms=60000, pair_burst=2)
    check(send(srv, to="777")[0] == 200 and send(srv, to="777")[0] == 200, "pair burst of 2")
    expect_error(send(srv, to="777"), 500, "INTERNAL_ERROR", "pair limit", meta=131056)
    check(send(srv, to="778")[0] == 200, "pair limit is per recipient")
    check(send(srv, to="777", phoneNumberId="1000004")[0] == 200, "pair limit is per sender")
    srv.control(pair_interval_ms=0)

    srv.control(rules=[{"to": "+4412345", "status": 400, "error": "VALIDATION_ERROR",
                        "meta": 131026, "times": 2},
                       {"to": "999", "status": 503, "times": -1}])
    for i in range(2):
        expect_error(send(srv, to="4412345"), 400, "VALIDATION_ERROR", "scripted rule #%d" % i,
                     meta=131026)
    check(send(srv, to="4412345")[0] == 200, "rule spent after `times`")
    for i in range(3):
        expect_error(send(srv, to="999"), 503, "INTERNAL_ERROR", "rule with times -1")
    srv.control(rules=[])
    check(send(srv, to="999")[0] == 200, "rules replaced")


def test_switches(srv):
    srv.control(token_revoked=True)
    expect_error(send(srv), 401, "UNAUTHORIZED", "token_revoked")
    expect_error(srv.request("GET", "/v2/me", headers=AUTH), 401, "UNAUTHORIZED",
                 "token_revoked on /v2/me")
    check(srv.request("GET", "/v2/health")[0] == 200, "health ignores token_revoked")
    srv.control(token_revoked=False)
    check(send(srv)[0] == 200, "token restored")

    srv.control(tokens=["new-1", "new-2"])
    expect_error(send(srv), 401, "UNAUTHORIZED", "old token after tokens replaced")
    check(send(srv, headers={"X-API-Token": "new-2"})[0] == 200, "new token works")
    srv.control(tokens=[TOKEN])

    for account, status, code in (("no_account", 404, "NOT_FOUND"),
                                  ("plan_expired", 403, "PLAN_EXPIRED"),
                                  ("developer_plan", 403, "DEVELOPER_PLAN_REQUIRED")):
        srv.control(account=account)
        data = expect_error(send(srv), status, code, "account " + account)
        if account == "no_account" and data:
            check(data["message"] == "WhatsApp account not found", "no_account message")
        # The token is checked before the account.
        expect_error(send(srv, headers={}), 401, "UNAUTHORIZED", "token before " + account)
    srv.control(account="ok")
    check(send(srv)[0] == 200, "account ok again")

    for bad in ({"latency_ms": -1}, {"fail_rate": 2}, {"account": "gold"}, {"nope": 1},
                {"rules": [{"status": 400}]}, {"tokens": "x"}, {"token_revoked": 1}):
        st, _, data = srv.request("POST", "/_fake/control", bad)
        check(st == 400 and data.get("ok") is False and data.get("error"),
              "control rejects %r" % bad)
    st, _, _ = srv.request("POST", "/_fake/control", b"nope")
    check(st == 400, "control rejects non-JSON")
    st, _, cfg = srv.request("GET", "/_fake/config")
    check(st == 200 and cfg["latency_ms"] == 0 and cfg["account"] == "ok",
          "a rejected control changes nothing")


def test_resets(srv):
    srv.request("POST", "/_fake/reset-stats")
    n = len(srv.log_lines())
    srv.control(reset_before=1.0)
    expect_dropped(srv, "reset_before")
    check(len(srv.log_lines()) == n, "reset_before is not logged")
    srv.control(reset_before=0, reset_after=1.0)
    expect_dropped(srv, "reset_after", text="after")
    lines = srv.log_lines()
    check(len(lines) == n + 1 and lines[-1]["body"]["text"] == "after",
          "reset_after is logged")
    srv.control(reset_after=0, rules=[{"to": "31", "reset": "before", "times": 1},
                                      {"to": "32", "reset": "after", "times": 1}])
    expect_dropped(srv, "rule reset before", to="31")
    expect_dropped(srv, "rule reset after", to="32")
    check(len(srv.log_lines()) == n + 2, "rule resets: only 'after' logged")
    srv.control(rules=[])
    st = srv.stats()
    check(st["resets_before"] == 2 and st["resets_after"] == 2 and st["accepted"] == 2
          and st["senders"]["1000001"]["resets_after"] == 2, "reset counters %r" % st)


def test_stats(srv):
    st, _, data = srv.request("POST", "/_fake/reset-stats")
    check(st == 200 and data == {"ok": True}, "reset-stats")
    s = srv.stats()
    check(s["requests"] == 0 and s["accepted"] == 0 and s["by_status"] == {},
          "counters zeroed")
    send(srv)
    send(srv)
    send(srv, headers={})
    send(srv, phoneNumberId="1000009")
    srv.control(fail_rate=1.0)
    send(srv)
    srv.control(fail_rate=0)
    s = srv.stats()
    check(s["requests"] == 5 and s["accepted"] == 3, "requests/accepted %r" % s)
    check(s["by_status"] == {"200": 3, "401": 1, "500": 1}, "by_status %r" % s["by_status"])
    check(s["senders"]["1000001"]["accepted"] == 2 and s["senders"]["1000009"]["accepted"] == 1
          and s["senders"]["1000001"]["failed"] == 1, "per-sender counters")
    check(len(srv.log_lines()) > 0, "reset-stats keeps the log")


def test_keepalive(srv):
    c = srv.conn()
    c.connect()
    sock = c.sock
    for i in range(10):
        st, _, _ = send(srv, conn=c, text="ka %d" % i)
        check(st == 200 and c.sock is sock, "keep-alive request %d on the same socket" % i)
    # An error answer keeps the connection too.
    expect_error(send(srv, conn=c, to=None), 400, "VALIDATION_ERROR", "error on keep-alive")
    st, _, _ = srv.request("GET", "/v2/health", conn=c)
    check(st == 200 and c.sock is sock, "keep-alive after an error answer")
    c.close()


def test_latency(srv):
    srv.control(latency_ms=400)
    out = {}

    def slow():
        t0 = time.monotonic()
        out["status"] = send(srv)[0]
        out["took"] = time.monotonic() - t0

    th = threading.Thread(target=slow)
    t0 = time.monotonic()
    th.start()
    # Health is not a send route: answered at once even while a delayed send is pending.
    st, _, _ = srv.request("GET", "/v2/health")
    fast = time.monotonic() - t0
    th.join()
    check(st == 200 and fast < 0.35, "other requests not blocked by latency (%.3fs)" % fast)
    check(out.get("status") == 200 and out.get("took", 0) >= 0.39,
          "send delayed by latency_ms (%.3fs)" % out.get("took", 0))
    srv.control(latency_ms=0)


def measure(srv, seconds=1.0, threads=4):
    """Informal: requests/s of sends over keep-alive connections from Python threads."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i):
        c = srv.conn()
        body = json.dumps({"phoneNumberId": "1000005", "to": "1555", "text": "bench"})
        hdrs = dict(AUTH, **{"Content-Type": "application/json"})
        while time.monotonic() < stop:
            c.request("POST", "/v2/messages/send/text", body, hdrs)
            c.getresponse().read()
            counts[i] += 1
        c.close()

    ths = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def test_shutdown_with_pending(srv):
    """SIGTERM while a delayed answer is pending: the server still exits 0, promptly."""
    srv.control(latency_ms=10000)
    before = srv.stats()["requests"]
    done = threading.Event()

    def slow():
        try:
            send(srv)
        except (OSError, http.client.HTTPException):
            pass
        done.set()

    th = threading.Thread(target=slow, daemon=True)
    th.start()
    # Wait until the server has taken the request (counted before it is suspended).
    deadline = time.monotonic() + 10
    while srv.stats()["requests"] <= before and time.monotonic() < deadline:
        pass
    t0 = time.monotonic()
    rc, err = srv.stop()
    check(rc == 0, "exit code 0 after SIGTERM (got %r)\n%s" % (rc, err))
    check(time.monotonic() - t0 < 5, "stopped promptly with a pending delayed answer")
    check(done.wait(5), "the pending client was answered or closed")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="fakeapi-") as tmp:
        srv = Server(binary, tmp)
        try:
            for t in (test_routes, test_validation, test_success_and_log, test_faults,
                      test_switches, test_resets, test_stats, test_keepalive, test_latency):
                print("--", t.__name__, flush=True)
                t(srv)
            rps = measure(srv)
            print("INFO: ~%.0f sends/s (4 Python client threads, keep-alive, latency 0; "
                  "the client is the bottleneck)" % rps, flush=True)
            print("-- test_shutdown_with_pending", flush=True)
            test_shutdown_with_pending(srv)
        finally:
            if srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
        # A second instance: options from the command line.
        srv = Server(binary, tmp, "--token", "a", "--token", "b", "--phone-numbers", "42,43",
                     "--fail-rate", "1", "--fail-meta-code", "131057", "--threads", "1")
        try:
            print("-- test_cli_options", flush=True)
            st, _, data = srv.request("GET", "/v2/me", headers={"X-API-Token": "b"})
            check(st == 200 and data["data"]["phoneNumberIds"] == ["42", "43"], "--phone-numbers")
            expect_error(srv.request("GET", "/v2/me", headers=AUTH), 401, "UNAUTHORIZED",
                         "default token replaced by --token")
            expect_error(send(srv, headers={"X-API-Token": "a"}, phoneNumberId="43"), 500,
                         "INTERNAL_ERROR", "--fail-rate/--fail-meta-code", meta=131057)
            rc, err = srv.stop()
            check(rc == 0, "second instance exits 0 (got %r)\n%s" % (rc, err))
        finally:
            if srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
