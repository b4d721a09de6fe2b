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
"""
import os
import shutil
import socket
import subprocess
import sys

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
""" + stub.OWN_TEMP + """    keepalive_requests 20;
    upstream api {{ server 127.0.0.1:{up}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
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


def h2_goaway(wd):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None or shutil.which("openssl") is None:
        print("SKIP h2_goaway: needs nginx and openssl (scripts/deps.sh --extra or --bench)")
        sys.exit(77)
    ngdir = wd.file("nginx")
    os.makedirs(os.path.join(ngdir, "tmp"))
    ca, crt, key = stub.make_certs(ngdir)
    api = avp.FakeAPI(wd, "--latency-ms", "100")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = os.path.join(ngdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(dir=ngdir, up=api.port, port=port, crt=crt, key=key))
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
    ng.terminate()
    ng.wait(10)
    api.stop()


CASES = {f.__name__: f for f in (h2_goaway,)}

if __name__ == "__main__":
    case = CASES.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if case is None:
        sys.exit("usage: test_tls.py %s" % "|".join(CASES))
    avp.run(case)
