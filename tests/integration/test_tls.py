#!/usr/bin/env python3
"""avenpingd over HTTPS with HTTP/2, through nginx (Debian's) in front of
the fake API, as production sits behind a TLS terminator. Skipped (77)
without nginx or openssl: the test suite does not install them
(scripts/deps.sh --bench does).

Case:
  h2_goaway   nginx ends each connection after 20 requests (keepalive_requests):
              its GOAWAY refuses the streams above its last one, which it never
              passed on. libcurl sends those again on a new connection, which is
              right over HTTP/2; under at-most-once they must not become
              `uncertain` (56 of 1,800 did when the resend guard of HTTP/1.1
              also applied to the first burst over HTTP/2).
  h1_idle_close
              HTTP/1.1 over TLS (http2 = no, and http2 = yes against an nginx
              that speaks only HTTP/1.1): nginx closes idle keep-alive
              connections after 1 s (keepalive_timeout), with a close_notify
              alert before its FIN. The next burst must not write requests
              into those connections: under at-most-once none may become
              `uncertain` (7 to 15 of 100 did per burst: libcurl took the
              alert waiting in a cached connection for a live connection).
  h2_connect_wait
              http2 = yes against an address that takes TCP connections and
              never accepts them (no TLS handshake): the requests waiting for
              that connection (PIPEWAIT) run out of request_timeout_ms before
              libcurl's lookup, which it reported as "Failed to resolve host
              '127.0.0.1' with timeout after 0 ms" (the account's reason too):
              no lookup failed. They count as not sent, none uncertain.
  https_to_plain
              an https:// api_base naming a plain HTTP server's port: the
              account pauses as unreachable, and the reason says that the
              server does not speak TLS there (OpenSSL's "wrong version
              number" alone was all it said); no job fails or is uncertain.
"""
import collections
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import avp  # noqa: E402
from avp import check, wait_all_final  # noqa: E402

import stub  # noqa: E402  bench/stub.py: certificates and nginx's own-directory lines

CONF = """
worker_processes 1;
daemon off;
""" + stub.OWN_DIR + """events {{ worker_connections 1024; }}
http {{
""" + stub.OWN_TEMP + """    {keepalive}
    upstream api {{ server 127.0.0.1:{up}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_certificate {crt};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_front(wd, api, keepalive, http2=True):
    """nginx terminating TLS in front of the fake API; `keepalive`: its
    keep-alive lines. Returns (port, ca_file). Skips (77) without nginx."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None or shutil.which("openssl") is None:
        print("SKIP: needs nginx and openssl (scripts/deps.sh --extra or --bench)")
        sys.exit(77)
    ngdir = wd.file("nginx")
    os.makedirs(os.path.join(ngdir, "tmp"))
    ca, crt, key = stub.make_certs(ngdir)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = os.path.join(ngdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(dir=ngdir, up=api.port, port=port, crt=crt, key=key,
                            keepalive=keepalive, http2=" http2" if http2 else ""))
    ng = subprocess.Popen([nginx, "-c", conf, "-p", ngdir], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(ngdir, "stderr"), "w"), start_new_session=True)
    wd.procs.append(ng)
    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    avp.wait_for(listening, 10, "nginx listening")
    return port, ca


def h2_goaway(wd):
    api = avp.FakeAPI(wd, "--latency-ms", "100")
    port, ca = nginx_front(wd, api, "keepalive_requests 20;")
    d = avp.Daemon(wd, "https://localhost:%d" % port,
                   {"delivery": "at-most-once", "ca_file": ca, "http2": "yes"}).start()
    cl = d.client()
    n = 600
    answers = cl.pipeline([avp.text_job(i, to="+1677%07d" % i) for i in range(n)])
    check(len(answers) == n and all(a.get("ok") for a in answers), "acknowledged")
    st = wait_all_final(cl, 120)
    check(st["counts"]["sent"] == n and st["counts"]["uncertain"] == 0,
          "all sent, none uncertain: %s" % st["counts"])
    seen = avp.count_markers(api.sends())
    check(len(seen) == n and max(seen.values()) == 1, "each delivered once")
    check(st["httpConnects"] >= n / 20, "nginx ended connections: %d" % st["httpConnects"])
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    api.stop()


def client_conns(port):
    """States of the TCP connections to 127.0.0.1:port from this machine
    (/proc/net/tcp: "01" established, "08" close-wait: the peer closed)."""
    remote = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return collections.Counter(r[3] for r in rows if r[2] == remote)


def h1_idle_close(wd):
    api = avp.FakeAPI(wd)
    port, ca = nginx_front(wd, api, "keepalive_timeout 1s;", http2=False)
    for http2 in ("no", "yes"):
        d = avp.Daemon(wd, "https://127.0.0.1:%d" % port,
                       {"delivery": "at-most-once", "ca_file": ca, "http2": http2,
                        "max_inflight": 16}, state_dir=wd.file("state-" + http2),
                       name="daemon-" + http2).start()
        cl = d.client()
        for burst in range(3):
            avp.submit_all(d, [avp.text_job(i, to="+1678%07d" % i)
                               for i in range(burst * 100, burst * 100 + 100)])
            st = wait_all_final(cl, 60)
            check(st["counts"]["uncertain"] == 0,
                  "http2 = %s, burst %d: none uncertain: %s" % (http2, burst, st["counts"]))
            # nginx closed every idle connection (keepalive_timeout).
            avp.wait_for(lambda: (lambda c: c["08"] > 0 and c["01"] == 0)(client_conns(port)),
                         20, "nginx closing the idle connections")
        check(st["counts"]["sent"] == 300, "all sent: %s" % st["counts"])
        cl.close()
        check(d.stop() == 0, "SIGTERM exits 0")
    seen = avp.count_markers(api.sends())
    check(len(seen) == 300 and set(seen.values()) == {2}, "each delivered once per daemon")
    api.stop()


def h2_connect_wait(wd):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)  # never accepted: the TLS handshake never starts
    d = avp.Daemon(wd, "https://127.0.0.1:%d" % ls.getsockname()[1],
                   {"delivery": "at-most-once", "http2": "yes", "max_inflight": 8,
                    "connect_timeout_ms": 300, "request_timeout_ms": 1000}).start()
    cl = d.client()
    ids = avp.submit_all(d, [avp.text_job(i) for i in range(20)])
    st = avp.wait_for(lambda: (lambda s: s if s["account"]["state"] == "paused" else None)(
        cl.stats()), 60, "the account paused as unreachable")
    errors = [st["account"]["reason"]]
    for job in ids:
        j = cl.request({"op": "get", "job": job})["job"]
        check(j["state"] in ("queued", "retrying", "sending"), "not sent, retried: %s" % j)
        if j["lastError"]:
            check(j["lastError"]["code"] == "CONNECT_ERROR", "not sent: %s" % j["lastError"])
            errors.append(j["lastError"]["message"])
    check(not [e for e in errors if "resolve" in e], "no lookup blamed: %s" % errors)
    check("API unreachable" in errors[0], "paused as unreachable: %s" % errors[0])
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    ls.close()


class PlainHTTP(socketserver.BaseRequestHandler):
    """What a plain HTTP server says to a TLS ClientHello (the fake API
    sometimes closes without a word instead)."""

    def handle(self):
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")


def https_to_plain(wd):
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), PlainHTTP)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    d = avp.Daemon(wd, "https://127.0.0.1:%d" % srv.server_address[1],
                   {"delivery": "at-most-once"}).start()
    cl = d.client()
    ids = avp.submit_all(d, [avp.text_job(i) for i in range(20)])
    st = avp.wait_for(lambda: (lambda s: s if s["account"]["state"] == "paused" else None)(
        cl.stats()), 60, "the account paused as unreachable")
    reason = st["account"]["reason"]
    check("does not speak TLS" in reason and "plain http" in reason,
          "the reason names the scheme: %s" % reason)
    job = cl.request({"op": "get", "job": ids[0]})["job"]
    check(job["lastError"]["code"] == "CONNECT_ERROR" and "does not speak TLS" in
          job["lastError"]["message"], "the job's lastError too: %s" % job["lastError"])
    check(st["counts"]["failed"] == 0 and st["counts"]["uncertain"] == 0, "%s" % st["counts"])
    cl.close()
    check(d.stop() == 0, "SIGTERM exits 0")
    srv.shutdown()
    srv.server_close()


CASES = {f.__name__: f for f in (h2_goaway, h1_idle_close, h2_connect_wait, https_to_plain)}

if __name__ == "__main__":
    case = CASES.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if case is None:
        sys.exit("usage: test_tls.py %s" % "|".join(CASES))
    avp.run(case)
