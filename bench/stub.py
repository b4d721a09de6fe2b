"""The static v2 stub for the benchmarks: nginx (Debian's package) answering
every POST under /v2/ with the v2 success JSON, over plain HTTP/1.1 or TLS
(HTTP/1.1 or HTTP/2) with a self-signed certificate made here.

With `log=True` each request is logged as "<arrival time> <request body>"
(the echo module reads the body; nginx's own access log gives the time), so
the benchmarks can judge rates and latencies at the server. stub_status
counts accepted connections (= TLS handshakes over https).
"""
import os
import re
import shutil
import socket
import subprocess
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

SUCCESS = ('{"success":true,"data":{"messaging_product":"whatsapp","contacts":[{"input":'
           '"15551234567","wa_id":"15551234567"}],"messages":[{"id":'
           '"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QUNFNjM3RDc2QjJFRTZGMjkA",'
           '"message_status":"accepted"}]}}')

# An nginx that keeps everything in one directory of its own ({dir}): its
# pid, error log and temporary files (also used by tests/integration/test_tls.py).
OWN_DIR = """pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
"""
OWN_TEMP = """    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
"""

CONF = """
load_module {echo};
worker_processes {workers};
""" + OWN_DIR + """events {{ worker_connections 4096; }}
http {{
""" + OWN_TEMP + """    client_body_buffer_size 64k;
    # Keep-alive forever: a benchmark's connections live for the whole run,
    # so handshakes per 1,000 sends show the client's reuse, not nginx's
    # defaults (1,000 requests per connection).
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 1024;
    log_format bodies '$msec $request_body';
    server {{
        listen 127.0.0.1:{port} {listen_opts};
        {tls}
        location = /stub_status {{ stub_status; }}
        location /v2/ {{
            default_type application/json;
            {log}
            {body}
        }}
    }}
}}
"""


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_certs(dirname):
    """A CA and a server certificate for 127.0.0.1 signed by it. Returns
    (ca_file, cert_file, key_file)."""
    ca_key, ca_crt = os.path.join(dirname, "ca.key"), os.path.join(dirname, "ca.crt")
    key, csr, crt = (os.path.join(dirname, n) for n in ("srv.key", "srv.csr", "srv.crt"))
    ext = os.path.join(dirname, "srv.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=avp bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca_crt, crt, key


class Stub:
    """nginx in `dirname`. tls: None (plain HTTP/1.1), "h1" or "h2"."""

    def __init__(self, dirname, tls=None, log=False, workers=1, buffered=True):
        self.dir = dirname
        os.makedirs(os.path.join(dirname, "tmp"), exist_ok=True)
        self.port = _free_port()
        self.log = os.path.join(dirname, "bodies.log")
        self.ca_file = None
        listen_opts, tls_conf = "", ""
        if tls:
            self.ca_file, crt, key = make_certs(dirname)
            listen_opts = "ssl http2" if tls == "h2" else "ssl"
            tls_conf = ("ssl_certificate %s; ssl_certificate_key %s; "
                        "ssl_protocols TLSv1.2 TLSv1.3;" % (crt, key))
        scheme = "https" if tls else "http"
        self.base = "%s://127.0.0.1:%d" % (scheme, self.port)
        if log:
            # The echo module reads the body, so $request_body is set.
            body = "echo_read_request_body; echo -n '%s';" % SUCCESS
            logc = "access_log %s bodies%s;" % (self.log, " buffer=1m flush=1s" if buffered else "")
        else:
            body = "return 200 '%s';" % SUCCESS
            logc = ""
        conf = CONF.format(echo=ECHO_MODULE, workers=workers, dir=dirname, port=self.port,
                           listen_opts=listen_opts, tls=tls_conf, log=logc, body=body)
        self.conf = os.path.join(dirname, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-p", dirname, "-e", os.path.join(dirname, "error.log"),
                                      "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: %s" % self.errors())
                time.sleep(0.02)

    def errors(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def accepted(self):
        """Connections accepted so far (stub_status), including the ones
        this call opens (1, over plain HTTP only: over TLS the caller reads
        the status before and after a run over the same kind of request)."""
        import ssl
        import http.client
        if self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/stub_status")
        text = c.getresponse().read().decode()
        c.close()
        m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", text)
        return int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # nginx: fast shutdown, flushes the log buffer
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def entries(self):
        """(arrival time, body) of every logged request, in log order."""
        out = []
        with open(self.log, "rb") as f:
            for line in f:
                t, _, body = line.rstrip(b"\n").partition(b" ")
                out.append((float(t), body))
        return out


PHONE = re.compile(rb'phoneNumberId\\x22:\\x22(\d+)')
STAMP = re.compile(rb't(\d+\.\d+)-(\d+)')


def phone_of(body):
    """nginx logs the body with '"' escaped as \\x22."""
    m = PHONE.search(body)
    return m.group(1).decode() if m else None


def stamp_of(body):
    m = STAMP.search(body)
    return (float(m.group(1)), int(m.group(2))) if m else None
