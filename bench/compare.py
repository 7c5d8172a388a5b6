#!/usr/bin/env python3
"""Proxy comparison: authproxy vs nginx vs HAProxy on loopback.

Run through bench/run.sh, which installs the tools, builds authproxy and
hands over: python3 bench/compare.py bench BINARY TMPDIR RESULTS_MD

Also holds a tiny helper server (python stdlib only):
  compare.py upload-sink PORT  reads and discards any request body, answers 200
The token endpoint is the standard (RFC 6749) mock provider of
src/demo/mocks, the one the tests use, as a process
(target/release/examples/mock_provider, bench/mock_provider.rs; 1 h tokens).

Everything listens on 127.0.0.1; every wait is bounded; every process
started here is stopped here (and run.sh's EXIT trap is the safety net).
"""

import datetime
import http.server
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

TOKEN = "bench-static-token-0123456789abcdef"
# seconds, the whole run.sh including build (BENCH_LIMIT overrides); 26 min
# since the base, close, HTTPS, 1,000-routes and tunnel rows carry nginx
# and HAProxy with access logs, and the base, close and HTTPS rows the
# hyper floor too (at 22 min the runs were cut from 4 s to 3 s; the
# tunnel rows' logging fronts add 12 runs of 5 s).
TOTAL_LIMIT = float(os.environ.get("BENCH_LIMIT") or 1560.0)
RESERVE = 40.0  # report, shutdown
REPS = 3
RUN_SECONDS = 5
if os.environ.get("BENCH_QUICK"):  # a functional check of this script, not a benchmark
    REPS, RUN_SECONDS = 1, 1
REPS = int(os.environ.get("BENCH_REPS") or REPS)
RUN_SECONDS = int(os.environ.get("BENCH_SECONDS") or RUN_SECONDS)
# Groups of rows (BENCH_ROWS="tls,close" runs only those):
#   base       small GET at 1 and 64 connections, 64 KiB GET and POST, the
#              oauth2 and RUST_LOG=warn rows, 1 GiB streaming
#   tls        HTTPS upstream (loopback nginx with TLS, a CA made here)
#   close      clients sending `Connection: close` (a connection per request)
#   routes     1,000 routes in the config
#   footprint  start-to-ready over 20 starts (idle and peak RSS come with any group)
#   dpop       the oauth2 row with `dpop = true` (a proof per request)
#   tunnel     placeholder: skipped with a message until the feature exists
ROW_GROUPS = ("base", "tls", "close", "routes", "footprint", "dpop", "tunnel")
ROWS = [g.strip() for g in (os.environ.get("BENCH_ROWS") or ",".join(ROW_GROUPS)).split(",") if g.strip()]
for _g in ROWS:
    if _g not in ROW_GROUPS:
        sys.exit(f"BENCH_ROWS: unknown group {_g!r} (known: {', '.join(ROW_GROUPS)})")
ROUTES = 1000  # the many-routes row
STARTS = 20  # start-to-ready samples per system
CLK_TCK = os.sysconf("SC_CLK_TCK")
ONE_GIB = 1 << 30


# ------------------------------------------------------------ helpers


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def git_state(folder):
    """The checkout's commit, and whether files other than this script's
    own output differ from it."""
    head = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    status = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30).stdout.splitlines()
    changed = [line[3:] for line in status if not line.endswith("bench/results.md")]
    return f"{head} + uncommitted changes in {', '.join(changed)}" if changed else head


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    pids, todo = [], [pid]
    while todo and len(pids) < 64:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def status_kb(pids, key):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class RssSampler:
    """Samples the summed VmRSS of some processes every `every` seconds."""

    def __init__(self, pids, every=0.1):
        self.pids, self.every, self.max_kb = pids, every, 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_ev.is_set():
            self.max_kb = max(self.max_kb, status_kb(self.pids, "VmRSS"))
            self.stop_ev.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join(timeout=2)
        self.max_kb = max(self.max_kb, status_kb(self.pids, "VmRSS"))


def http_get(port, path, timeout=5.0, method="GET", body=None, tls_ca=None):
    """A tiny HTTP/1.1 client (Connection: close): (status, body bytes).
    With `tls_ca`, over TLS to `localhost`, verified against that CA file."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        s = ssl.create_default_context(cafile=tls_ca).wrap_socket(raw, server_hostname="localhost") if tls_ca else raw
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    if b"transfer-encoding: chunked" in head.lower():
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2 :]
        rest = out
    return status, rest


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def make_ca(d):
    """A CA and a server certificate for `localhost` and 127.0.0.1 signed by
    it (EC P-256, valid 2 days), made with the openssl CLI in folder `d`.
    Returns (ca.pem, server.pem, server.key)."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    crt, key, csr = (os.path.join(d, n) for n in ("server.pem", "server.key", "server.csr"))
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=authproxy bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return ca, crt, key


# -------------------------------------------------------- helper servers


def upload_sink(port):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def discard(self):
            got = 0
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    left = size
                    while left:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            return got
                        left -= len(chunk)
                        got += len(chunk)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                    got += len(chunk)
            return got

        def do_POST(self):
            got = self.discard()
            body = f"received {got}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


# --------------------------------------------------------------- bench


class Sys:
    """One system in a scenario: where wrk sends requests and what the
    upstream must see. `proc` is None for the upstream itself."""

    def __init__(self, port, prefix, proc, scheme="http", auth=None, auth_is_prefix=False, load=None):
        self.port, self.prefix, self.proc, self.scheme, self.auth = port, prefix, proc, scheme, auth
        self.auth_is_prefix = auth_is_prefix  # the oauth2 route: `Bearer at-<n>-<hex>`
        # bench/tunnel_load.rs instead of wrk: (mode, [HOST:PORT, CA]) for
        # `tunnel` / `tls`, ("reverse", []) for the plain comparison.
        self.load = load

    def key(self):
        return (self.port, self.prefix, self.scheme, self.load and self.load[0])


NGX_LOG = "nginx, 1 worker, access log + request id"
# bench/hyper_floor.rs with FLOOR_DUTIES=all: hyper's server and client plus
# the per-request work SPEC.md asks of every route, each in its cheapest
# form. The floor in user instructions (bench/callgrind.sh); in CPU time
# the nearest thing to one, within a single run's noise.
FLOOR = "hyper floor + duties (one thread)"
# The same floor reading a client at most BODY_READ bytes at a time, as
# authproxy does while a request body streams in (src/http/head_timeout.rs
# BODY_READ, 16 KiB - 1: what keeps a stalled upload from growing hyper's
# read buffer to 128 KiB for the connection's life). On the upload row
# only: it is what that bound costs the floor itself.
BODY_READ = 16 * 1024 - 1
FLOOR_READ = "hyper floor + duties, reads of at most 16 KiB - 1 (one thread)"
HAP_LOG = "haproxy, nbthread 1, access log + request id"


class Scenario:
    def __init__(self, sid, group, title, path, conns, systems, lua=None, headers=(), baseline=None):
        self.sid, self.group, self.title, self.path, self.conns = sid, group, title, path, conns
        self.systems, self.lua, self.headers = systems, lua, list(headers)
        # {row name: (scenario id, row name)}: rows to compare this one with.
        self.baseline = baseline or {}


class Bench:
    def __init__(self, binary, tmp, results):
        self.binary, self.tmp, self.results = binary, tmp, results
        self.procs = []
        self.start = float(os.environ.get("BENCH_START") or time.time())
        self.notes = []
        self.peak_rss = {}  # pid -> highest VmRSS sampled during a 64-connection run
        self.ready = {}  # footprint label -> start-to-ready seconds, STARTS samples

    # -- processes

    def spawn(self, name, args, env=None, log_name=None):
        out = open(os.path.join(self.tmp, log_name or f"{name}.log"), "wb")
        p = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or os.environ.copy(),
            cwd=self.tmp,
        )
        self.procs.append((name, p))
        with open(os.path.join(self.tmp, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                # nginx: SIGQUIT is a graceful stop; the rest take SIGTERM.
                p.send_signal(signal.SIGQUIT if name.startswith("nginx") else signal.SIGTERM)
        deadline = time.time() + 5
        for name, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    # -- configs

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def nginx_text(self, name, port, body, http_extra="", servers=""):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        temps = "\n".join(
            f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  keepalive_requests 1000000;
  keepalive_timeout 65;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
{http_extra}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{body}
  }}
{servers}
}}
"""

    def nginx_conf(self, name, port, body, http_extra="", servers=""):
        return self.write(f"{name}.conf", self.nginx_text(name, port, body, http_extra, servers))

    # The front proxies. Each text takes its ports so that the start-to-ready
    # measurement can start copies of exactly these configs on fresh ports.

    NGINX_PROXY = """      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {token}";
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;
"""

    def nginx_front_text(self, name, port, tls_port, health=False, term_port=None):
        P = self.port
        proxy = self.NGINX_PROXY.format(token=TOKEN)
        health_loc = '    location = /health { return 200 "ok\\n"; }\n' if health else ""
        # The HTTPS upstream: a keep-alive pool like the plain one, the
        # certificate checked against the bench CA for the name `localhost`
        # (nginx checks names, not IP addresses, so the name is set; with an
        # upstream block it would otherwise be the block's name).
        tls_server = f"""  server {{
    listen 127.0.0.1:{tls_port} backlog=4096;
    location / {{
      proxy_pass https://tls_backend;
{proxy}      proxy_ssl_protocols TLSv1.2 TLSv1.3;  # 1.22's default stops at 1.2; the others speak 1.3
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {self.ca};
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }}
  }}"""
        if term_port:
            # The tunnel rows' counterpart: TLS from the client terminated
            # here (the bench CA's `localhost` certificate), on to the HTTPS
            # upstream's pool: TLS on both sides, the work a tunnel adds.
            tls_server += "\n" + tls_server.replace(
                f"listen 127.0.0.1:{tls_port} backlog=4096;",
                f"listen 127.0.0.1:{term_port} ssl backlog=4096;\n"
                f"    ssl_certificate {self.crt};\n    ssl_certificate_key {self.key};\n"
                "    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:term:1m;",
            )
        return self.nginx_text(
            name,
            port,
            f"""    client_max_body_size 2g;
    client_body_buffer_size 128k;
{health_loc}    location / {{
      proxy_pass http://backend;
{proxy}    }}
""",
            http_extra=f"  upstream backend {{ server 127.0.0.1:{P['up']}; keepalive 64; }}\n"
            f"  upstream tls_backend {{ server 127.0.0.1:{P['up_tls']}; keepalive 64; }}",
            servers=tls_server,
        )

    # nginx and HAProxy configured as authproxy is by default (one
    # access-log line per request with SPEC.md's fields, the client's
    # X-Request-Id kept or one made, sent upstream and back), for the
    # "configured equivalently" rows. nginx buffers the log as authproxy's
    # writer does (64 KiB or 50 ms); HAProxy has no such buffer and writes
    # each line to stdout (a file here).
    NGINX_LOG_HTTP = """  map $http_x_request_id $reqid { default $http_x_request_id; "" $request_id; }
  log_format spec '$msec $reqid $remote_addr:$remote_port $request_method $uri $status '
                  '$request_length $bytes_sent $upstream_response_time $request_time';
"""

    def nginx_log_server(self, name):
        """A server's lines that log each request (to `name`'s folder) and
        answer with its request id (NGINX_LOG_HTTP in the http block)."""
        return (f"    access_log {os.path.join(self.tmp, name)}/access.log spec buffer=64k flush=50ms;\n"
                "    add_header X-Request-Id $reqid always;\n")

    def nginx_log_text(self, name, port, tls_port, term_port=None):
        text = self.nginx_front_text(name, port, tls_port, term_port=term_port)
        text = text.replace("http {\n  access_log off;\n", "http {\n  access_log off;\n" + self.NGINX_LOG_HTTP, 1)
        # Every server (plain, HTTPS upstream, TLS-terminating) logs to the
        # same file.
        for backend in ("http://backend", "https://tls_backend"):
            old = f"    location / {{\n      proxy_pass {backend};\n"
            assert text.count(old) == (2 if term_port and backend.startswith("https") else 1), backend
            text = text.replace(
                old,
                self.nginx_log_server(name)
                + f"    location / {{\n      proxy_pass {backend};\n      proxy_set_header X-Request-Id $reqid;\n",
            )
        return text

    def haproxy_log_text(self, port, tls_port, term_port=None):
        # Every frontend: plain, HTTPS upstream, TLS-terminating.
        frontends = (f"frontend fe\n  bind 127.0.0.1:{port}\n",
                     f"frontend fe_tls\n  bind 127.0.0.1:{tls_port}\n")
        if term_port:
            frontends += (f"frontend fe_term\n  bind 127.0.0.1:{term_port} ssl crt {self.crt_and_key}\n",)
        return self.haproxy_logging(self.haproxy_text(port, tls_port, term_port=term_port), frontends)

    @staticmethod
    def haproxy_logging(text, frontends):
        """`text` logging to stdout, and each frontend that starts with one
        of `frontends` logging each request (SPEC.md's fields) and keeping
        or making its request id."""
        text = text.replace("global\n", "global\n  log stdout format raw local0 info\n", 1)
        for old in frontends:
            assert text.count(old) == 1, old
            text = text.replace(
                old,
                old
                + "  log global\n"
                + "  log-format \"%t %[var(txn.reqid)] %ci:%cp %HM %HP %ST %U %B %Tr %Ta\"\n"
                + "  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid\n"
                + "  http-request set-var(txn.reqid) req.hdr(x-request-id)\n"
                + "  http-request set-var(txn.reqid) unique-id unless { var(txn.reqid) -m found }\n"
                + "  http-request set-header X-Request-Id %[var(txn.reqid)]\n"
                + "  http-response set-header X-Request-Id %[var(txn.reqid)]\n",
            )
        return text

    def haproxy_text(self, port, tls_port, health=False, term_port=None):
        P = self.port
        monitor = "  monitor-uri /health\n" if health else ""
        term = ""
        if term_port:
            term = f"""frontend fe_term
  bind 127.0.0.1:{term_port} ssl crt {self.crt_and_key}
  http-request set-header Authorization "Bearer {TOKEN}"
  default_backend be_tls
"""
        return f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
{monitor}  http-request set-header Authorization "Bearer {TOKEN}"
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{P['up']}
frontend fe_tls
  bind 127.0.0.1:{tls_port}
  http-request set-header Authorization "Bearer {TOKEN}"
  default_backend be_tls
backend be_tls
  http-reuse always
  server up_tls 127.0.0.1:{P['up_tls']} ssl verify required ca-file {self.ca} verifyhost localhost sni str(localhost)
{term}"""

    def authproxy_text(self, port):
        P = self.port
        return f"""
[server]
listen = "127.0.0.1:{port}"

[store]
kind = "memory"

[providers.static]
type = "static"
headers = {{ Authorization = "Bearer {TOKEN}" }}

[providers.cc]
type = "oauth2"
grant = "client_credentials"
token_url = "http://127.0.0.1:{P['token']}/token"
client_id = "bench"
client_secret = "bench-secret"

[[routes]]
prefix = "/s/"
upstream = "http://127.0.0.1:{P['up']}/"
provider = "static"

[providers.dp]
type = "oauth2"
grant = "client_credentials"
token_url = "http://127.0.0.1:{P['token']}/token"
client_id = "bench"
client_secret = "bench-secret"
dpop = true

[[routes]]
prefix = "/o/"
upstream = "http://127.0.0.1:{P['up']}/"
provider = "cc"

[[routes]]
prefix = "/d/"
upstream = "http://127.0.0.1:{P['up']}/"
provider = "dp"

[[routes]]
prefix = "/sink/"
upstream = "http://127.0.0.1:{P['sink']}/"
provider = "static"

[[routes]]
prefix = "/tls/"
upstream = "https://127.0.0.1:{P['up_tls']}/"
provider = "static"
ca_file = "{self.ca}"
"""

    FP_HOST = "api.bench.test"

    def authproxy_fp_text(self, port):
        P = self.port
        fp = os.path.join(self.tmp, "fp")
        return f"""
[server]
listen = "127.0.0.1:{port}"

[store]
kind = "memory"

[forward_proxy]
enabled = true
ca_cert = "{fp}/ca.pem"
ca_key = "{fp}/ca.key"

[providers.static]
type = "static"
headers = {{ Authorization = "Bearer {TOKEN}" }}

[[routes]]
host = "{self.FP_HOST}"
upstream = "https://127.0.0.1:{P['up_tls']}/"
provider = "static"
ca_file = "{self.ca}"

[[routes]]
prefix = "/tls/"
upstream = "https://127.0.0.1:{P['up_tls']}/"
provider = "static"
ca_file = "{self.ca}"
"""

    # The many-routes configs: route i (0..999) is the prefix /rNNNN/ with its
    # own credential `Bearer <TOKEN>-NNNN`, all to the plain upstream; the
    # load goes to the last one.

    def route_token(self, i):
        return f"Bearer {TOKEN}-{i:04d}"

    def authproxy_routes_text(self, port):
        parts = [f'[server]\nlisten = "127.0.0.1:{port}"\n\n[store]\nkind = "memory"\n']
        for i in range(ROUTES):
            parts.append(f'[providers.p{i:04d}]\ntype = "static"\nheaders = {{ Authorization = "{self.route_token(i)}" }}\n')
        for i in range(ROUTES):
            parts.append(f'[[routes]]\nprefix = "/r{i:04d}/"\nupstream = "http://127.0.0.1:{self.port["up"]}/"\n'
                         f'provider = "p{i:04d}"\n')
        return "\n".join(parts)

    def nginx_routes_text(self, name, port, health=False, log=False):
        health_loc = '    location = /health { return 200 "ok\\n"; }\n' if health else ""
        # proxy_set_header in a location replaces every inherited one, so each
        # location repeats Connection (and the request id); the rest is
        # inherited from the server.
        reqid = " proxy_set_header X-Request-Id $reqid;" if log else ""
        locs = "".join(
            f'    location /r{i:04d}/ {{ proxy_pass http://backend/; proxy_set_header Connection ""; '
            f'proxy_set_header Authorization "{self.route_token(i)}";{reqid} }}\n'
            for i in range(ROUTES)
        )
        logging = self.nginx_log_server(name) if log else ""
        return self.nginx_text(
            name,
            port,
            f"""    client_max_body_size 2g;
    client_body_buffer_size 128k;
    proxy_http_version 1.1;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_max_temp_file_size 0;
{logging}{health_loc}{locs}""",
            http_extra=f"  upstream backend {{ server 127.0.0.1:{self.port['up']}; keepalive 64; }}\n"
            + (self.NGINX_LOG_HTTP if log else ""),
        )

    def haproxy_routes_text(self, port, log=False):
        # The indexed way HAProxy does a large route table: an exact-match map
        # (a tree) on the first path segment, not 1,000 ACLs in a row.
        mapfile = self.write("haproxy-routes.map", "".join(f"r{i:04d} {self.route_token(i)}\n" for i in range(ROUTES)))
        text = self.haproxy_routes_base(port, mapfile)
        return self.haproxy_logging(text, (f"frontend fe\n  bind 127.0.0.1:{port}\n",)) if log else text

    def haproxy_routes_base(self, port, mapfile):
        return f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  http-request set-var(txn.cred) path,field(2,/),map({mapfile})
  http-request deny deny_status 404 unless {{ var(txn.cred) -m found }}
  http-request set-header Authorization %[var(txn.cred)]
  http-request replace-path ^/r[0-9]+(/.*)$ \\1
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{self.port['up']}
"""

    # -- start

    def start_all(self):
        t = self.tmp
        www = os.path.join(t, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "small"), "wb") as f:
            f.write(b"s" * 99 + b"\n")
        with open(os.path.join(www, "large"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        with open(os.path.join(www, "huge"), "wb") as f:
            f.truncate(ONE_GIB)  # sparse: no disk, reads as zeros
        self.post_lua = self.write(
            "post.lua",
            'wrk.method = "POST"\nwrk.body = string.rep("x", 65536)\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n',
        )
        self.ca, crt, key = make_ca(os.path.join(t, "tls"))
        self.crt, self.key = crt, key
        self.crt_and_key = self.write("tls/server-and-key.pem", open(crt).read() + open(key).read())

        self.port = {
            k: free_port()
            for k in ("up", "up_tls", "sink", "token", "ap1", "ap", "apq", "nginx", "nginx_tls", "haproxy",
                      "haproxy_tls", "floor_tls", "ap_routes", "nginx_routes", "haproxy_routes", "nginx_routes_log", "haproxy_routes_log", "ap_fp", "nginx_term",
                      "haproxy_term", "nginx_log", "nginx_log_tls", "haproxy_log", "haproxy_log_tls", "floor",
                      "floor_read", "nginx_log_term", "haproxy_log_term")
        }
        P = self.port

        # Upstream nginx: static files, /upload discards a body of up to
        # 1 MiB (`return` reads and drops it, keeping the connection), /auth
        # echoes the Authorization it got. The same again over TLS (HTTP/1.1
        # only: no ALPN h2) on a second port.
        up_body = f"""    root {www};
    default_type application/octet-stream;
    location = /upload {{
      client_max_body_size 1m;
      client_body_buffer_size 128k;
      return 200 "ok\\n";
    }}
    location = /auth {{ return 200 "$http_authorization"; }}
    location = /reqid {{ return 200 "$http_x_request_id"; }}
    location = /dpop {{ return 200 "$http_authorization $http_dpop"; }}
    location = /tls-protocol {{ return 200 "$ssl_protocol"; }}
"""
        up = self.nginx_conf(
            "nginx-upstream",
            P["up"],
            up_body,
            servers=f"""  server {{
    listen 127.0.0.1:{P['up_tls']} ssl backlog=4096;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
{up_body}  }}""",
        )
        term = "tunnel" in ROWS
        front = self.write("nginx-front.conf", self.nginx_front_text(
            "nginx-front", P["nginx"], P["nginx_tls"], term_port=P["nginx_term"] if term else None))
        hap = self.write("haproxy.cfg", self.haproxy_text(
            P["haproxy"], P["haproxy_tls"], term_port=P["haproxy_term"] if term else None))

        me = os.path.abspath(__file__)
        p = self.spawn("upload-sink", [sys.executable, me, "upload-sink", str(P["sink"])])
        wait_port(P["sink"], p)
        mock = os.path.join(os.path.dirname(self.binary), "examples", "mock_provider")
        p = self.spawn("token-mock", [mock, "standard", f"127.0.0.1:{P['token']}", "bench", "bench-secret"])
        wait_port(P["token"], p)
        self.up = self.spawn("nginx-upstream", ["nginx", "-e", f"{t}/nginx-upstream/error.log", "-p", t, "-c", up])
        wait_port(P["up"], self.up)
        wait_port(P["up_tls"], self.up)
        self.idle_rss = {}
        self.nginx = self.spawn("nginx-front", ["nginx", "-e", f"{t}/nginx-front/error.log", "-p", t, "-c", front])
        wait_port(P["nginx"], self.nginx)
        self.haproxy = self.spawn("haproxy", ["haproxy", "-db", "-f", hap])
        wait_port(P["haproxy"], self.haproxy)
        front_log = self.write("nginx-log.conf", self.nginx_log_text(
            "nginx-log", P["nginx_log"], P["nginx_log_tls"], term_port=P["nginx_log_term"] if term else None))
        self.nginx_log = self.spawn("nginx-log", ["nginx", "-e", f"{t}/nginx-log/error.log", "-p", t, "-c", front_log])
        wait_port(P["nginx_log"], self.nginx_log)
        hap_log = self.write("haproxy-log.cfg", self.haproxy_log_text(
            P["haproxy_log"], P["haproxy_log_tls"], term_port=P["haproxy_log_term"] if term else None))
        self.haproxy_log = self.spawn("haproxy-log", ["haproxy", "-db", "-f", hap_log])
        wait_port(P["haproxy_log"], self.haproxy_log)

        self.ap = {}
        for key, threads, rust_log in (("ap1", "1", None), ("ap", None, None), ("apq", None, "warn")):
            conf = self.write(f"authproxy-{key}.toml", self.authproxy_text(P[key]))
            p = self.spawn(f"authproxy-{key}", [self.binary, "run", "--config", conf], env=self.ap_env(threads, rust_log))
            wait_port(P[key], p)
            self.ap[key] = p

        # The floor: authproxy-ap1's config (it reads the first route, /s/,
        # and its static header), one thread, every duty on.
        conf = self.write("floor.toml", self.authproxy_text(P["floor"]))
        env = self.ap_env(None, None)
        env["FLOOR_DUTIES"] = "all"
        floor = os.path.join(os.path.dirname(self.binary), "examples", "hyper_floor")
        self.floor = self.spawn("hyper-floor", [floor, "run", "--config", conf], env=env)
        wait_port(P["floor"], self.floor)
        conf = self.write("floor-read.toml", self.authproxy_text(P["floor_read"]))
        self.floor_read = self.spawn("hyper-floor-read", [floor, "run", "--config", conf],
                                     env=dict(env, FLOOR_READ=str(BODY_READ)))
        wait_port(P["floor_read"], self.floor_read)
        # And for the HTTPS-upstream rows: the /tls/ route (rustls to the
        # upstream, trusting the bench CA, as authproxy does).
        conf = self.write("floor-tls.toml", self.authproxy_text(P["floor_tls"]))
        self.floor_tls = self.spawn("hyper-floor-tls", [floor, "run", "--config", conf],
                                    env=dict(env, FLOOR_ROUTE="/tls/"))
        wait_port(P["floor_tls"], self.floor_tls)

        self.fp = None
        if term:
            # Forward-proxy mode: its CA made on first start in fp/; one host
            # route (api.bench.test) and one prefix route, both to the HTTPS
            # upstream with the bench's static credential.
            conf = self.write("authproxy-fp.toml", self.authproxy_fp_text(P["ap_fp"]))
            self.fp = self.spawn("authproxy-fp", [self.binary, "run", "--config", conf], env=self.ap_env("1", None))
            wait_port(P["ap_fp"], self.fp)
            wait_port(P["nginx_term"], self.nginx)
            wait_port(P["haproxy_term"], self.haproxy)
            wait_port(P["nginx_log_term"], self.nginx_log)
            wait_port(P["haproxy_log_term"], self.haproxy_log)

        self.routes = {}
        if "routes" in ROWS:
            conf = self.write("authproxy-routes.toml", self.authproxy_routes_text(P["ap_routes"]))
            p = self.spawn("authproxy-routes", [self.binary, "run", "--config", conf], env=self.ap_env("1", None))
            wait_port(P["ap_routes"], p)
            self.routes["ap"] = p
            conf = self.write("nginx-routes.conf", self.nginx_routes_text("nginx-routes", P["nginx_routes"]))
            p = self.spawn("nginx-routes", ["nginx", "-e", f"{t}/nginx-routes/error.log", "-p", t, "-c", conf])
            wait_port(P["nginx_routes"], p)
            self.routes["nginx"] = p
            conf = self.write("haproxy-routes.cfg", self.haproxy_routes_text(P["haproxy_routes"]))
            p = self.spawn("haproxy-routes", ["haproxy", "-db", "-f", conf])
            wait_port(P["haproxy_routes"], p)
            self.routes["haproxy"] = p
            # And both as authproxy runs by default: access log, request id.
            conf = self.write("nginx-routes-log.conf",
                              self.nginx_routes_text("nginx-routes-log", P["nginx_routes_log"], log=True))
            p = self.spawn("nginx-routes-log", ["nginx", "-e", f"{t}/nginx-routes-log/error.log", "-p", t, "-c", conf])
            wait_port(P["nginx_routes_log"], p)
            self.routes["nginx_log"] = p
            conf = self.write("haproxy-routes-log.cfg", self.haproxy_routes_text(P["haproxy_routes_log"], log=True))
            p = self.spawn("haproxy-routes-log", ["haproxy", "-db", "-f", conf])
            wait_port(P["haproxy_routes_log"], p)
            self.routes["haproxy_log"] = p

        # Idle RSS: each process tree 0.2 s after its port answered (for
        # nginx, master + worker).
        time.sleep(0.2)
        self.idle_rss = {
            "authproxy, 1 worker thread": status_kb([self.ap["ap1"].pid], "VmRSS"),
            "authproxy, default runtime (2 threads)": status_kb([self.ap["ap"].pid], "VmRSS"),
            "nginx, 1 worker": status_kb(tree(self.nginx.pid), "VmRSS"),
            "haproxy, nbthread 1": status_kb(tree(self.haproxy.pid), "VmRSS"),
        }
        if self.routes:
            self.idle_rss[f"authproxy, 1 worker thread, {ROUTES:,} routes"] = status_kb([self.routes["ap"].pid], "VmRSS")
            self.idle_rss[f"nginx, 1 worker, {ROUTES:,} locations"] = status_kb(tree(self.routes["nginx"].pid), "VmRSS")

    def ap_env(self, threads, rust_log):
        env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "TOKIO_WORKER_THREADS")}
        if threads:
            env["TOKIO_WORKER_THREADS"] = threads
        if rust_log:
            env["RUST_LOG"] = rust_log
        return env

    def wait_log(self, name, needle, proc, timeout=15.0):
        path = os.path.join(self.tmp, name)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: process exited ({proc.returncode}):\n{open(path).read()[-2000:]}")
            if needle in open(path, errors="replace").read():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name}: no '{needle}' within {timeout}s")

    # -- footprint: start-to-ready

    def start_to_ready(self):
        """Time from exec to the first 200 on the health endpoint, STARTS
        times per system, each start on fresh ports with a copy of the
        bench's config (authproxy: /_authproxy/health; nginx: a `location =
        /health`; HAProxy: `monitor-uri /health`). Polled every millisecond."""
        t = self.tmp

        def authproxy(conf_text, threads):
            def start():
                port = free_port()
                conf = self.write("ready-authproxy.toml", conf_text(port))
                return port, "/_authproxy/health", [self.binary, "run", "--config", conf], self.ap_env(threads, None)
            return start

        def nginx():
            port = free_port()
            conf = self.write("ready-nginx.conf", self.nginx_front_text("ready-nginx", port, free_port(), health=True))
            return port, "/health", ["nginx", "-e", f"{t}/ready-nginx/error.log", "-p", t, "-c", conf], None

        def nginx_routes():
            port = free_port()
            conf = self.write("ready-nginx.conf", self.nginx_routes_text("ready-nginx", port, health=True))
            return port, "/health", ["nginx", "-e", f"{t}/ready-nginx/error.log", "-p", t, "-c", conf], None

        def haproxy():
            port = free_port()
            conf = self.write("ready-haproxy.cfg", self.haproxy_text(port, free_port(), health=True))
            return port, "/health", ["haproxy", "-db", "-f", conf], None

        systems = [
            ("authproxy, 1 worker thread", authproxy(self.authproxy_text, "1")),
            ("authproxy, default runtime (2 threads)", authproxy(self.authproxy_text, None)),
            (f"authproxy, 1 worker thread, {ROUTES:,} routes", authproxy(self.authproxy_routes_text, "1")),
            ("nginx, 1 worker", nginx),
            (f"nginx, 1 worker, {ROUTES:,} locations", nginx_routes),
            ("haproxy, nbthread 1", haproxy),
        ]
        for label, make in systems:
            samples = []
            for _ in range(STARTS):
                port, path, args, env = make()
                t0 = time.perf_counter()
                p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env or os.environ.copy(), cwd=t)
                try:
                    deadline = t0 + 10
                    while True:
                        if p.poll() is not None:
                            raise RuntimeError(f"start-to-ready {label}: exited with {p.returncode} ({' '.join(args)})")
                        try:
                            if http_get(port, path, timeout=2)[0] == 200:
                                samples.append(time.perf_counter() - t0)
                                break
                        except OSError:
                            pass
                        if time.perf_counter() > deadline:
                            raise RuntimeError(f"start-to-ready {label}: no 200 on {path} within 10 s")
                        time.sleep(0.001)
                finally:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(timeout=5)
            self.ready[label] = samples
            log(f"start-to-ready {label}: median {statistics.median(samples) * 1000:.1f} ms, "
                f"max {max(samples) * 1000:.1f} ms over {len(samples)} starts")

    # -- scenarios

    def scenarios(self):
        P, A = self.port, self.ap
        ap1 = "authproxy, 1 worker thread"
        apd = "authproxy, default runtime (2 threads)"
        ngx = "nginx, 1 worker"
        hap = "haproxy, nbthread 1"
        bearer = f"Bearer {TOKEN}"
        base = {
            "direct (nginx upstream)": Sys(P["up"], "", None),
            ap1: Sys(P["ap1"], "/s", A["ap1"], auth=bearer),
            apd: Sys(P["ap"], "/s", A["ap"], auth=bearer),
            ngx: Sys(P["nginx"], "", self.nginx, auth=bearer),
            hap: Sys(P["haproxy"], "", self.haproxy, auth=bearer),
            NGX_LOG: Sys(P["nginx_log"], "", self.nginx_log, auth=bearer),
            HAP_LOG: Sys(P["haproxy_log"], "", self.haproxy_log, auth=bearer),
            FLOOR: Sys(P["floor"], "/s", self.floor, auth=bearer),
        }
        oauth = Sys(P["ap"], "/o", A["ap"], auth="Bearer at-", auth_is_prefix=True)
        quiet = Sys(P["apq"], "/s", A["apq"], auth=bearer)
        oauth_name = "authproxy oauth2 client_credentials (cached token), default runtime"
        out = [
            Scenario("small1", "base", "small GET (100 B), 1 connection", "/small", 1, {**base, oauth_name: oauth}),
            Scenario("small64", "base", "small GET (100 B), 64 connections", "/small", 64,
                     {**base, oauth_name: oauth, "authproxy, default runtime, RUST_LOG=warn (no access log)": quiet}),
            Scenario("large64", "base", "64 KiB GET, 64 connections", "/large", 64, dict(base)),
            Scenario("upload64", "base", "64 KiB POST, 64 connections", "/upload", 64,
                     {**base, FLOOR_READ: Sys(P["floor_read"], "/s", self.floor_read, auth=bearer)}, lua=self.post_lua),
        ]
        tls = {
            "direct (nginx upstream, https)": Sys(P["up_tls"], "", None, scheme="https"),
            ap1: Sys(P["ap1"], "/tls", A["ap1"], auth=bearer),
            ngx: Sys(P["nginx_tls"], "", self.nginx, auth=bearer),
            hap: Sys(P["haproxy_tls"], "", self.haproxy, auth=bearer),
            NGX_LOG: Sys(P["nginx_log_tls"], "", self.nginx_log, auth=bearer),
            HAP_LOG: Sys(P["haproxy_log_tls"], "", self.haproxy_log, auth=bearer),
            FLOOR: Sys(P["floor_tls"], "/tls", self.floor_tls, auth=bearer),
        }
        out += [
            Scenario("tls_small64", "tls", "HTTPS upstream: small GET (100 B), 64 connections", "/small", 64, tls),
            Scenario("tls_large64", "tls", "HTTPS upstream: 64 KiB GET, 64 connections", "/large", 64, dict(tls)),
        ]
        close = {k: base[k] for k in ("direct (nginx upstream)", ap1, ngx, hap, NGX_LOG, HAP_LOG, FLOOR)}
        out.append(Scenario("close64", "close", "Connection: close (a connection per request): small GET, 64 connections",
                            "/small", 64, close, headers=["Connection: close"]))
        if self.routes:
            last = f"/r{ROUTES - 1:04d}"
            tok = self.route_token(ROUTES - 1)
            many = {
                f"{ap1}, {ROUTES:,} routes": Sys(P["ap_routes"], last, self.routes["ap"], auth=tok),
                f"{ngx}, {ROUTES:,} locations": Sys(P["nginx_routes"], last, self.routes["nginx"], auth=tok),
                f"{hap}, {ROUTES:,}-entry map": Sys(P["haproxy_routes"], last, self.routes["haproxy"], auth=tok),
                f"{NGX_LOG}, {ROUTES:,} locations":
                    Sys(P["nginx_routes_log"], last, self.routes["nginx_log"], auth=tok),
                f"{HAP_LOG}, {ROUTES:,}-entry map":
                    Sys(P["haproxy_routes_log"], last, self.routes["haproxy_log"], auth=tok),
            }
            out.append(Scenario("routes64", "routes", f"{ROUTES:,} routes, the last one: small GET (100 B), 64 connections",
                                "/small", 64, many,
                                baseline={name: ("small64", one)
                                          for name, one in zip(many, (ap1, ngx, hap, NGX_LOG, HAP_LOG))}))
        out += self.dpop_rows(oauth_name) + self.tunnel_rows()
        chosen = [s for s in out if s.group in ROWS]
        # A row compared with another one brings that one along.
        wanted = {sid for s in chosen for sid, _ in s.baseline.values()}
        return [s for s in out if s in chosen or s.sid in wanted]

    def dpop_rows(self, oauth_name):
        """The OAuth path with DPoP on (`dpop = true`, RFC 9449): the same
        client_credentials token from `mock_provider standard` (it ignores
        the proof and answers `token_type: Bearer`, so the upstream sees
        `Bearer at-…` plus a `DPoP` header), a new proof signed per
        request. nginx and HAProxy cannot sign a proof per request without
        scripting (njs / Lua): the row is compared with authproxy's own
        cached-token oauth2 row, and the difference is the price of one
        ES256 signature per request. The check asks the upstream's `/dpop`
        (`$http_authorization $http_dpop`) that a proof arrived."""
        P, A = self.port, self.ap
        name = "authproxy oauth2 client_credentials + DPoP (a proof per request), default runtime"
        dp = Sys(P["ap"], "/d", A["ap"], auth="Bearer at-", auth_is_prefix=True)
        return [Scenario("dpop64", "dpop", "OAuth path with DPoP on: small GET (100 B), 64 connections",
                         "/small", 64, {name: dp}, baseline={name: ("small64", oauth_name)})]

    def tunnel_rows(self):
        """Requests inside a forward-proxy tunnel (issue 18) against the
        reverse path, both to the HTTPS upstream, with bench/tunnel_load.rs
        (wrk cannot CONNECT): each connection sends `CONNECT
        api.bench.test:443` once, TLS inside trusting authproxy's own CA,
        then keep-alive GETs. The reverse row is the same authproxy process
        and upstream, plain HTTP from the client. nginx and HAProxy cannot
        terminate CONNECT: their counterpart is a TLS-terminating front
        (`listen … ssl` / `bind … ssl crt`) on to the same HTTPS upstream,
        TLS on both sides of the proxy, which is the work a tunnel adds."""
        if self.fp is None:
            return []
        P = self.port
        fp_ca = os.path.join(self.tmp, "fp", "ca.pem")
        bearer = f"Bearer {TOKEN}"
        ap = "authproxy, 1 worker thread"
        systems = {
            f"{ap}, inside a CONNECT tunnel (TLS both sides)":
                Sys(P["ap_fp"], "", self.fp, scheme="https", auth=bearer,
                    load=("tunnel", [f"{self.FP_HOST}:443", fp_ca])),
            f"{ap}, reverse route (plain HTTP from the client)":
                Sys(P["ap_fp"], "/tls", self.fp, auth=bearer, load=("reverse", [])),
            "nginx, 1 worker, TLS-terminating front":
                Sys(P["nginx_term"], "", self.nginx, scheme="https", auth=bearer,
                    load=("tls", ["localhost:443", self.ca])),
            "haproxy, nbthread 1, TLS-terminating front":
                Sys(P["haproxy_term"], "", self.haproxy, scheme="https", auth=bearer,
                    load=("tls", ["localhost:443", self.ca])),
            f"{NGX_LOG}, TLS-terminating front":
                Sys(P["nginx_log_term"], "", self.nginx_log, scheme="https", auth=bearer,
                    load=("tls", ["localhost:443", self.ca])),
            f"{HAP_LOG}, TLS-terminating front":
                Sys(P["haproxy_log_term"], "", self.haproxy_log, scheme="https", auth=bearer,
                    load=("tls", ["localhost:443", self.ca])),
        }
        return [
            Scenario("tunnel_small64", "tunnel", "Inside a forward-proxy tunnel (HTTPS upstream): small GET (100 B), "
                     "64 connections", "/small", 64, systems),
            Scenario("tunnel_large64", "tunnel", "Inside a forward-proxy tunnel (HTTPS upstream): 64 KiB GET, "
                     "64 connections", "/large", 64, dict(systems)),
        ]

    def tunnel_get(self, s, path):
        """(status, body) of one GET through `s` as its load generator sends
        it: through the tunnel with curl (`--proxy`, the proxy's CA), else
        as usual."""
        if s.load and s.load[0] == "tunnel":
            r = subprocess.run(
                ["curl", "-s", "--max-time", "10", "--proxy", f"http://127.0.0.1:{s.port}", "--cacert", s.load[1][1],
                 "-o", "-", "-w", "\n%{http_code}", f"https://{s.load[1][0].split(':')[0]}{path}"],
                capture_output=True, timeout=20)
            body, _, code = r.stdout.rpartition(b"\n")
            return int(code or 0), body
        return http_get(s.port, s.prefix + path, tls_ca=self.ca if s.scheme == "https" else None)

    def check(self, scenarios):
        """Every path works and carries the injected credential."""
        problems = []
        seen = set()
        for sc in scenarios:
            for name, s in sc.systems.items():
                if (s.key(), sc.path, sc.lua) in seen:
                    continue
                seen.add((s.key(), sc.path, sc.lua))
                try:
                    # Only each process's first port was waited for at start.
                    wait_port(s.port, s.proc)
                    problems += self.check_system(sc, name, s)
                except OSError as e:
                    problems.append(f"{sc.title} / {name}: {e!r}")
        for name, s in [(n, s) for sc in scenarios for n, s in sc.systems.items() if n in (NGX_LOG, HAP_LOG)][:2]:
            # The request-id rows: an id is made and sent upstream.
            st, body = http_get(s.port, s.prefix + "/reqid")
            if st != 200 or len(body) < 8:
                problems.append(f"{name}: /reqid -> {st} {body[:80]!r} (no X-Request-Id upstream)")
        if any(sc.group == "base" for sc in scenarios):
            # nginx must read and drop the POST body and keep the connection:
            # two uploads on one curl connection, the second without a connect.
            url = f"http://127.0.0.1:{self.port['up']}/upload"
            out = subprocess.run(
                ["curl", "-s", "-w", "%{http_code}:%{num_connects} ", "--data-binary", f"@{self.tmp}/www/large",
                 "-o", "/dev/null", url, "-o", "/dev/null", url],
                capture_output=True, text=True, timeout=20,
            ).stdout.split()
            if out != ["200:1", "200:0"]:
                problems.append(f"upstream /upload keep-alive check: {out}")
            else:
                self.notes.append(
                    "Upstream `/upload` uses nginx `return 200` (nginx reads and discards the body first); "
                    "checked: two 64 KiB POSTs on one connection both answer 200 and the second needs no new connect."
                )
        if problems:
            raise RuntimeError("sanity checks failed:\n  " + "\n  ".join(problems))
        log("sanity checks passed (credential injected by every proxy, bodies intact, upstream keep-alive after POST, "
            "HTTPS upstream verified against the bench CA)")

    def check_system(self, sc, name, s):
        """What is wrong with `s` on row `sc` (a list of problems)."""
        problems = []
        ca = self.ca if s.scheme == "https" else None
        if s.load:
            st, body = self.tunnel_get(s, "/auth")
            want = (s.auth or "").encode()
            if st != 200 or body != want:
                problems.append(f"{sc.title} / {name}: /auth -> {st} {body[:80]!r}")
            want_len = {"/small": 100, "/large": 64 * 1024}[sc.path]
            st, body = self.tunnel_get(s, sc.path)
            if st != 200 or len(body) != want_len:
                problems.append(f"{sc.title} / {name}: {sc.path} -> {st}, {len(body)} bytes")
            return problems
        st, body = http_get(s.port, s.prefix + "/auth", tls_ca=ca)
        want = (s.auth or "").encode()
        if st != 200 or not (body.startswith(want) if s.auth_is_prefix else body == want):
            problems.append(f"{sc.title} / {name}: /auth -> {st} {body[:80]!r}")
        if sc.group == "dpop":
            # A proof (a compact JWS, `eyJ…`) next to the token.
            st, body = http_get(s.port, s.prefix + "/dpop", tls_ca=ca)
            if st != 200 or b" eyJ" not in body:
                problems.append(f"{sc.title} / {name}: /dpop -> {st} {body[:80]!r} (no DPoP proof)")
        if sc.group == "tls":
            # Every proxy speaks the same TLS version to the upstream.
            st, body = http_get(s.port, s.prefix + "/tls-protocol", tls_ca=ca)
            if st != 200 or body != b"TLSv1.3":
                problems.append(f"{sc.title} / {name}: upstream TLS version {st} {body[:40]!r}, want TLSv1.3")
        if sc.lua:
            st, body = http_get(s.port, s.prefix + "/upload", method="POST", body=b"x" * 65536, tls_ca=ca)
            if st != 200 or body != b"ok\n":
                problems.append(f"{sc.title} / {name}: POST /upload -> {st} {body[:80]!r}")
        else:
            want_len = {"/small": 100, "/large": 64 * 1024}[sc.path]
            st, body = http_get(s.port, s.prefix + sc.path, tls_ca=ca)
            if st != 200 or len(body) != want_len:
                problems.append(f"{sc.title} / {name}: {sc.path} -> {st}, {len(body)} bytes")
        return problems

    # -- runs

    def wrk(self, s, path, conns, seconds, lua=None, headers=()):
        if s.load:
            return self.tunnel_load(s, path, conns, seconds)
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "2s", "--latency"]
        for h in headers:
            cmd += ["-H", h]
        if lua:
            cmd += ["-s", lua]
        cmd.append(f"{s.scheme}://127.0.0.1:{s.port}{s.prefix}{path}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20).stdout
        return parse_wrk(out)

    def tunnel_load(self, s, path, conns, seconds):
        """bench/tunnel_load.rs, one thread like wrk -t1; its line parsed
        into wrk's fields."""
        binary = os.path.join(os.path.dirname(self.binary), "examples", "tunnel_load")
        mode, extra = s.load
        if mode == "reverse":
            cmd = [binary, mode, f"127.0.0.1:{s.port}", s.prefix + path, str(conns), str(seconds)]
        else:
            cmd = [binary, mode, f"127.0.0.1:{s.port}", extra[0], extra[1], path, str(conns), str(seconds)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
        fields = dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)
        out = {
            "requests": int(fields.get("requests", 0)),
            "rps": float(fields.get("rps", 0)),
            "p50": float(fields.get("p50_ms", "nan")),
            "p99": float(fields.get("p99_ms", "nan")),
            "errors": int(fields.get("errors", 1)),
            "raw": r.stdout + r.stderr,
        }
        if out["requests"] == 0 or r.returncode != 0:
            out["errors"] += 1
            log(f"tunnel_load produced no result: {r.stdout}{r.stderr}")
        return out

    def measure(self, s, sc, seconds):
        proc = s.proc
        pids = tree(proc.pid) if proc else []
        up_pids = tree(self.up.pid)
        c0, u0 = cpu_seconds(pids), cpu_seconds(up_pids)
        with RssSampler(pids) as rss:
            r = self.wrk(s, sc.path, sc.conns, seconds, sc.lua, sc.headers)
        c1, u1 = cpu_seconds(pids), cpu_seconds(up_pids)
        n = max(r["requests"], 1)
        r["cpu_us"] = (c1 - c0) / n * 1e6 if proc else None
        r["up_cpu_us"] = (u1 - u0) / n * 1e6
        r["rss_kb"] = rss.max_kb if proc else None
        r["hwm_kb"] = status_kb(pids, "VmHWM") if proc else None
        if proc and sc.conns == 64:
            self.peak_rss[proc.pid] = max(self.peak_rss.get(proc.pid, 0), rss.max_kb)
        return r

    def big_transfers(self):
        """RSS growth of authproxy (default runtime) while 1 GiB streams each way,
        and the same transfers without a proxy for reference."""
        p = self.ap["ap"]
        port = self.port["ap"]
        out = {}
        down = ["curl", "-s", "-o", "/dev/null", "--max-time", "90", "-w", "%{http_code} %{size_download} %{time_total}"]
        up = ["curl", "-s", "-o", "/dev/null", "--max-time", "90", "-w", "%{http_code} %{size_upload} %{time_total}",
              "-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", f"{self.tmp}/www/huge"]
        # Bring the sparse file into the page cache first, so no transfer
        # (the direct reference included) pays for that.
        with open(os.path.join(self.tmp, "www", "huge"), "rb") as f:
            buf = bytearray(1 << 20)
            while f.readinto(buf):
                pass
        for label, args in (
            ("direct: 1 GiB download", down + [f"http://127.0.0.1:{self.port['up']}/huge"]),
            ("direct: 1 GiB upload", up + [f"http://127.0.0.1:{self.port['sink']}/upload"]),
            ("1 GiB download (nginx upstream -> client)", down + [f"http://127.0.0.1:{port}/s/huge"]),
            ("1 GiB upload (client -> python sink)", up + [f"http://127.0.0.1:{port}/sink/upload"]),
            ("nginx front: 1 GiB download", down + [f"http://127.0.0.1:{self.port['nginx']}/huge"]),
            ("haproxy: 1 GiB download", down + [f"http://127.0.0.1:{self.port['haproxy']}/huge"]),
        ):
            before = status_kb([p.pid], "VmRSS")
            with RssSampler([p.pid], every=0.05) as rss:
                res = subprocess.run(args, capture_output=True, text=True, timeout=100).stdout.split()
            code, size, secs = (res + ["?", "0", "0"])[:3]
            out[label] = {
                "status": code,
                "bytes": int(float(size)),
                "seconds": float(secs),
                "before_kb": before,
                "max_kb": rss.max_kb,
            }
            log(f"{label}: HTTP {code}, {int(float(size)) / ONE_GIB:.2f} GiB in {float(secs):.1f}s, "
                f"RSS {mib(before)} -> max {mib(rss.max_kb)}")
        return out

    def run(self):
        log(f"temp dir {self.tmp}; rows: {', '.join(ROWS)}")
        self.start_all()
        scenarios = self.scenarios()
        self.check(scenarios)
        if "footprint" in ROWS:
            self.start_to_ready()
        big = self.big_transfers() if "base" in ROWS else {}
        tokens_before = json.loads(http_get(self.port["token"], "/_mock/stats")[1])["token_requests"]

        plan = []
        for rep in range(REPS):
            for sc in scenarios:
                names = list(sc.systems)
                k = rep % len(names)
                for name in names[k:] + names[:k]:  # alternate who goes first
                    plan.append((rep, sc, name))

        # Warm-up: 1 s per system (pools, token, page cache, TLS sessions).
        warm = {}
        for sc in scenarios:
            for s in sc.systems.values():
                warm.setdefault(s.key(), s)
        elapsed = time.time() - self.start
        budget = TOTAL_LIMIT - RESERVE - elapsed - len(warm) * 1.5
        fit = int(budget / max(len(plan), 1) - 0.6)
        per_run = max(min(RUN_SECONDS, fit), min(2, RUN_SECONDS))
        if fit < RUN_SECONDS:
            self.notes.append(
                f"Time budget was short (slow build or install; limit {TOTAL_LIMIT:.0f} s for the whole script): "
                f"runs were cut to {per_run} s."
            )
        planned = len(warm) * 1.5 + len(plan) * (per_run + 0.6)
        log(f"plan: {len(plan)} wrk runs x {per_run}s ({REPS} repetitions, systems alternating) "
            f"+ warm-up = about {planned / 60:.1f} min (elapsed so far {elapsed:.0f}s, limit {TOTAL_LIMIT:.0f}s)")
        for s in warm.values():
            self.wrk(s, "/small", 64, 1)

        results = {}
        load_start = open("/proc/loadavg").read().split()[:3]
        for i, (rep, sc, name) in enumerate(plan):
            if time.time() - self.start > TOTAL_LIMIT - RESERVE + 10:
                self.notes.append(f"Time limit reached: the last {len(plan) - i} runs were skipped.")
                break
            r = self.measure(sc.systems[name], sc, per_run)
            results.setdefault((sc.sid, name), []).append(r)
            log(f"rep {rep + 1} | {sc.title} | {name}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                f"p99 {r['p99']:.2f} ms, cpu {fmt(r['cpu_us'])} us/req, errors {r['errors']}")
        load_end = open("/proc/loadavg").read().split()[:3]
        tokens_after = json.loads(http_get(self.port["token"], "/_mock/stats")[1])["token_requests"]
        report = self.report(scenarios, results, big, per_run, tokens_before, tokens_after, load_start, load_end)
        with open(self.results, "w") as f:
            f.write(report)
        print(report, flush=True)

    # -- report

    def report(self, scenarios, results, big, per_run, tokens_before, tokens_after, load_start, load_end):
        def version(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except Exception as e:  # noqa: BLE001 - a version string is best effort
                return f"? ({e})"

        cpu_model = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        lines = [
            "# authproxy vs nginx vs HAProxy: loopback reverse-proxy benchmark",
            "",
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- machine: `nproc` = {os.cpu_count()}, {cpu_model}, kernel {os.uname().release}",
            f"- authproxy: {version([self.binary, '--version'])} (release build, git {git_state(os.path.dirname(self.binary))})",
            f"- nginx {version(['nginx', '-v']).split('/')[-1]}; HAProxy {version(['haproxy', '-v']).split()[2]}; "
            f"wrk {version(['wrk', '-v']).split()[1]}; curl {version(['curl', '--version']).split()[1]}; "
            f"{version(['rustc', '--version'])}",
            f"- load average at start {' '.join(load_start)}, at end {' '.join(load_end)}",
            f"- rows: {', '.join(ROWS)}",
            f"- method: wrk `-t1 --timeout 2s --latency`, {per_run} s per run, {REPS} repetitions, systems in rotating order; "
            "everything (wrk, upstream, proxy) shares the same cores, so absolute numbers are noisy and "
            "lower than on a real machine; compare ratios and CPU per request.",
            "- upstream: nginx, 1 worker, `access_log off`; `/small` 100 B, `/large` 64 KiB, `/upload` accepts 64 KiB and answers `ok`; "
            "the same files over TLS 1.3 (HTTP/1.1, EC P-256 certificate from a CA made with `openssl` for this run) on a second port.",
            "- proxies inject `Authorization: Bearer …`: authproxy static provider (`[store] kind = \"memory\"`, default logging = "
            "one access-log line per request on stderr, redirected to a file); nginx 1 worker, keep-alive upstream pool 64; "
            "HAProxy `nbthread 1`, `http-reuse always`.",
            f"- {FLOOR}: bench/hyper_floor.rs with `FLOOR_DUTIES=all` (hyper's server and client, a current-thread "
            "runtime, plus the per-request work SPEC.md asks of every route, each in its cheapest form: request id, "
            "hop-by-hop headers, access-log line, metrics, upstream timeout, shared keep-alive pool), authproxy-ap1's "
            "config; the floor of the stack in user instructions (callgrind), and in CPU time within a run's noise. "
            "On the HTTPS-upstream rows the floor takes the `/tls/` route (`FLOOR_ROUTE`): rustls to the upstream, "
            "HTTP/1.1, trusting the bench CA. "
            f"{FLOOR_READ} (64 KiB POST row only): the same, reading a client at most {BODY_READ:,} bytes at a time "
            "(`FLOOR_READ`), as authproxy does while a request body streams in, so that a stalled upload never grows "
            "hyper's read buffer past 16 KiB: what that memory bound costs the floor.",
            "- HTTPS upstream: authproxy route `upstream = \"https://127.0.0.1:…/\"` with `ca_file`; nginx `proxy_ssl_verify on`, "
            "`proxy_ssl_trusted_certificate`, `proxy_ssl_name localhost`, keep-alive pool 64; HAProxy "
            "`ssl verify required ca-file … verifyhost localhost`. Connection per request: wrk `-H 'Connection: close'`. "
            f"{ROUTES:,} routes: authproxy {ROUTES:,} `[[routes]]` (`/r0000/`…) each with its own static provider; "
            f"nginx {ROUTES:,} prefix locations; HAProxy a {ROUTES:,}-entry exact-match map on the first path segment "
            "(each also with the access log and request id); requests go to the last route. "
            "The HTTPS-upstream, 1,000-routes and tunnel rows carry nginx and HAProxy with the access log and request id too.",
            "- proxy CPU = utime+stime of the proxy process (for nginx master+worker) over the run / requests completed; "
            "upstream CPU likewise for the upstream nginx. p50/p99 = median over the repetitions. "
            "RSS = highest VmRSS sampled every 100 ms during the first repetition's run; the allocator keeps "
            "freed memory, so later scenarios include earlier growth (VmHWM, the peak since start, is listed at the end).",
            "",
        ]
        for sc in scenarios:
            lines += [f"## {sc.title}", "",
                      "| system | req/s median (min..max) | vs direct | p50 | p99 | proxy CPU µs/req | upstream CPU µs/req | RSS (1st rep) | errors |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            direct = next((n for n in sc.systems if n.startswith("direct")), None)
            base = results.get((sc.sid, direct)) if direct else None
            base_rps = statistics.median([r["rps"] for r in base]) if base else None
            for name in sc.systems:
                rs = results.get((sc.sid, name))
                if not rs:
                    lines.append(f"| {name} | (not run) | | | | | | | |")
                    continue
                rps = [r["rps"] for r in rs]
                med = statistics.median(rps)
                ratio = f"{med / base_rps:.2f}" if base_rps else "-"
                p50 = statistics.median(r["p50"] for r in rs)
                p99 = statistics.median(r["p99"] for r in rs)
                cpu = None if rs[0]["cpu_us"] is None else statistics.median(r["cpu_us"] for r in rs)
                up = statistics.median(r["up_cpu_us"] for r in rs)
                rss = rs[0]["rss_kb"]
                errs = sum(r["errors"] for r in rs)
                lines.append(
                    f"| {name} | {med:,.0f} ({min(rps):,.0f}..{max(rps):,.0f}) | {ratio} | {p50:.2f} ms | {p99:.2f} ms | "
                    f"{fmt(cpu)} | {up:.1f} | {mib(rss) if rss is not None else '-'} | {errs} |"
                )
            lines.append("")
            lines += self.floor_lines(sc, results)
            for name, (other_sid, other) in sc.baseline.items():
                a, b = results.get((sc.sid, name)), results.get((other_sid, other))
                if a and b:
                    ca = statistics.median(r["cpu_us"] for r in a)
                    cb = statistics.median(r["cpu_us"] for r in b)
                    lines.append(f"- {name}: proxy CPU {ca:.1f} µs/req against {cb:.1f} with the one-route config "
                                 f"({other}, small GET at 64 connections, same run): {ca / cb:.2f}×")
                else:
                    lines.append(f"- {name}: no comparison with the one-route config (one of the two rows did not run)")
            if sc.baseline:
                lines.append("")
        lines += self.footprint_lines()
        if big:
            lines += self.memory_lines(big)
        if any(sc.sid == "small64" for sc in scenarios):
            lines += [
                "## OAuth2 row",
                "",
                f"The client_credentials provider's token endpoint (the standard mock of src/demo/mocks, 1 h tokens) was asked "
                f"{tokens_after} time(s) in total, {tokens_after - tokens_before} time(s) during the load runs: "
                "the token is cached, so the oauth2 rows measure the same per-request work as the static rows.",
                "",
            ]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def floor_lines(self, sc, results):
        """CPU per request of the floor against the others in the same
        row: whether a target set against nginx or HAProxy is within
        reach of any proxy on this stack that keeps the contract."""
        def cpu(name):
            rs = results.get((sc.sid, name))
            return statistics.median(r["cpu_us"] for r in rs) if rs and rs[0]["cpu_us"] is not None else None

        lines = []
        a = cpu("authproxy, 1 worker thread")
        for floor, what in ((FLOOR, "The floor's"), (FLOOR_READ, "With reads of at most 16 KiB - 1, the floor's")):
            f = cpu(floor)
            if not f:
                continue
            parts = [f"{name} {f / c:.2f}×" for name in ("nginx, 1 worker", NGX_LOG, "haproxy, nbthread 1", HAP_LOG)
                     if (c := cpu(name))]
            lines.append(f"- {what} proxy CPU per request against: {', '.join(parts)}."
                         + (f" authproxy (1 worker thread) against it: {a / f:.2f}×." if a else ""))
        return lines + [""] if lines else []

    def footprint_lines(self):
        procs = {
            "authproxy, 1 worker thread": [self.ap["ap1"]],
            "authproxy, default runtime (2 threads)": [self.ap["ap"]],
            "nginx, 1 worker": [self.nginx],
            "haproxy, nbthread 1": [self.haproxy],
        }
        if self.routes:
            procs[f"authproxy, 1 worker thread, {ROUTES:,} routes"] = [self.routes["ap"]]
            procs[f"nginx, 1 worker, {ROUTES:,} locations"] = [self.routes["nginx"]]
        lines = [
            "## Footprint",
            "",
            f"Idle RSS: 0.2 s after start, before any load. Start-to-ready: from exec to the first 200 on the health "
            f"endpoint (authproxy `/_authproxy/health`, nginx a `location = /health`, HAProxy `monitor-uri`), polled "
            f"every millisecond, {STARTS} starts each with this run's config on fresh ports. Peak RSS: highest VmRSS "
            "sampled during the 64-connection runs; VmHWM: the kernel's peak since start, at the end (nginx: master + worker).",
            "",
            "| system | idle RSS | start-to-ready median | start-to-ready max | peak RSS, 64-connection runs | VmHWM at the end |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label in dict.fromkeys(list(procs) + list(self.ready)):
            ps = procs.get(label, [])
            idle = self.idle_rss.get(label)
            ready = self.ready.get(label)
            peak = max((self.peak_rss.get(p.pid, 0) for p in ps), default=0)
            hwm = status_kb([q for p in ps for q in tree(p.pid)], "VmHWM") if ps else 0
            lines.append(
                f"| {label} | {mib(idle) if idle else '-'} | "
                f"{f'{statistics.median(ready) * 1000:.1f} ms' if ready else '-'} | "
                f"{f'{max(ready) * 1000:.1f} ms' if ready else '-'} | "
                f"{mib(peak) if peak else '-'} | {mib(hwm) if hwm else '-'} |"
            )
        a, n = self.peak_rss.get(self.ap["ap1"].pid), self.peak_rss.get(self.nginx.pid)
        lines.append("")
        if a and n:
            lines += [f"Peak RSS under the 64-connection load, authproxy (1 worker thread) / nginx: {a / n:.2f}×.", ""]
        return lines

    def memory_lines(self, big):
        idle = self.idle_rss["authproxy, default runtime (2 threads)"]
        lines = ["## Memory (authproxy)", "",
                 "| measurement | value |", "|---|---:|"]
        lines.append(f"| idle RSS after start, 1 worker thread | {mib(self.idle_rss['authproxy, 1 worker thread'])} |")
        lines.append(f"| idle RSS after start, default runtime | {mib(idle)} |")
        for label, b in sorted(big.items(), key=lambda kv: not kv[0].startswith("1 GiB")):
            ok = b["status"] == "200" and b["bytes"] == ONE_GIB
            rate = f"{b['bytes'] / max(b['seconds'], 1e-9) / 1e6:,.0f} MB/s"
            if label.startswith("direct"):
                lines.append(f"| {label} without a proxy (reference) | {b['seconds']:.1f} s, {rate} |")
                continue
            if not label.startswith("1 GiB"):
                lines.append(f"| {label} (reference) | {b['seconds']:.1f} s, {rate} |")
                continue
            lines.append(
                f"| {label}: max VmRSS − idle | {mib(b['max_kb'] - idle)} "
                f"(HTTP {b['status']}, {b['bytes'] / ONE_GIB:.2f} GiB in {b['seconds']:.1f} s, "
                f"{rate}{'' if ok else ', INCOMPLETE'}) |"
            )
        lines.append("")
        return lines


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def parse_wrk(out):
    def num(pattern, cast=float, default=0):
        m = re.search(pattern, out, re.M)
        return cast(m.group(1)) if m else default

    def ms(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    r = {
        "requests": num(r"(\d+) requests in", int),
        "rps": num(r"Requests/sec:\s+([\d.]+)"),
        "p50": ms(50),
        "p99": ms(99),
        "errors": 0,
        "raw": out,
    }
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] += sum(int(x) for x in m.groups())
    r["errors"] += num(r"Non-2xx or 3xx responses: (\d+)", int)
    if r["requests"] == 0:
        r["errors"] += 1
        log(f"wrk produced no result:\n{out}")
    return r


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "upload-sink":
        return upload_sink(int(sys.argv[2]))
    if len(sys.argv) != 5 or sys.argv[1] != "bench":
        sys.exit(__doc__)
    bench = Bench(os.path.abspath(sys.argv[2]), sys.argv[3], sys.argv[4])

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.run()
    finally:
        bench.stop_all()


if __name__ == "__main__":
    main()
