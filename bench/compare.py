#!/usr/bin/env python3
"""Proxy comparison: authproxy vs nginx vs HAProxy on loopback.

Run through bench/run.sh, which installs the tools, builds authproxy and
hands over: python3 bench/compare.py bench BINARY TMPDIR RESULTS_MD

Also holds the two tiny helper servers (python stdlib only):
  compare.py token-mock PORT   client_credentials token endpoint (1 h tokens)
  compare.py upload-sink PORT  reads and discards any request body, answers 200

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
import statistics
import subprocess
import sys
import threading
import time

TOKEN = "bench-static-token-0123456789abcdef"
TOTAL_LIMIT = 480.0  # seconds, the whole run.sh including build
RESERVE = 40.0  # 1 GiB tests, report, shutdown
REPS = 3
RUN_SECONDS = 5
if os.environ.get("BENCH_QUICK"):  # a functional check of this script, not a benchmark
    REPS, RUN_SECONDS = 1, 1
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


def http_get(port, path, timeout=5.0, method="GET", body=None):
    """A tiny HTTP/1.1 client (Connection: close): (status, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
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


# -------------------------------------------------------- helper servers


def token_mock(port):
    count = {"n": 0}
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(n).decode()
            with lock:
                count["n"] += 1
                k = count["n"]
            if "grant_type=client_credentials" not in form:
                return self.reply(400, {"error": "unsupported_grant_type"})
            self.reply(200, {"access_token": f"cc-token-{k}", "token_type": "Bearer", "expires_in": 3600})

        def do_GET(self):
            self.reply(200, {"token_requests": count["n"]})

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


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


class Bench:
    def __init__(self, binary, tmp, results):
        self.binary, self.tmp, self.results = binary, tmp, results
        self.procs = []
        self.start = float(os.environ.get("BENCH_START") or time.time())
        self.notes = []

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

    def nginx_conf(self, name, port, body, http_extra=""):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        temps = "\n".join(
            f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return self.write(
            f"{name}.conf",
            f"""
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
}}
""",
        )

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

        self.port = {k: free_port() for k in ("up", "sink", "token", "ap1", "ap", "apq", "nginx", "haproxy")}
        P = self.port

        # Upstream nginx: static files, /upload discards a body of up to
        # 1 MiB (`return` reads and drops it, keeping the connection), /auth
        # echoes the Authorization it got.
        up = self.nginx_conf(
            "nginx-upstream",
            P["up"],
            f"""    root {www};
    default_type application/octet-stream;
    location = /upload {{
      client_max_body_size 1m;
      client_body_buffer_size 128k;
      return 200 "ok\\n";
    }}
    location = /auth {{ return 200 "$http_authorization"; }}
""",
        )
        front = self.nginx_conf(
            "nginx-front",
            P["nginx"],
            f"""    client_max_body_size 2g;
    client_body_buffer_size 128k;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {TOKEN}";
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;
    }}
""",
            http_extra=f"  upstream backend {{ server 127.0.0.1:{P['up']}; keepalive 64; }}",
        )
        hap = self.write(
            "haproxy.cfg",
            f"""
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
  bind 127.0.0.1:{P['haproxy']}
  http-request set-header Authorization "Bearer {TOKEN}"
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{P['up']}
""",
        )
        ap_conf = self.write(
            "authproxy.toml",
            f"""
[server]
listen = "127.0.0.1:0"

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

[[routes]]
prefix = "/o/"
upstream = "http://127.0.0.1:{P['up']}/"
provider = "cc"

[[routes]]
prefix = "/sink/"
upstream = "http://127.0.0.1:{P['sink']}/"
provider = "static"
""",
        )

        me = os.path.abspath(__file__)
        p = self.spawn("upload-sink", [sys.executable, me, "upload-sink", str(P["sink"])])
        wait_port(P["sink"], p)
        p = self.spawn("token-mock", [sys.executable, me, "token-mock", str(P["token"])])
        wait_port(P["token"], p)
        self.up = self.spawn("nginx-upstream", ["nginx", "-e", f"{t}/nginx-upstream/error.log", "-p", t, "-c", up])
        wait_port(P["up"], self.up)
        self.nginx = self.spawn("nginx-front", ["nginx", "-e", f"{t}/nginx-front/error.log", "-p", t, "-c", front])
        wait_port(P["nginx"], self.nginx)
        self.haproxy = self.spawn("haproxy", ["haproxy", "-db", "-f", hap])
        wait_port(P["haproxy"], self.haproxy)

        self.ap = {}
        self.idle_rss = {}
        for key, threads, rust_log in (("ap1", "1", None), ("ap", None, None), ("apq", None, "warn")):
            conf = self.write(
                f"authproxy-{key}.toml",
                open(ap_conf).read().replace("127.0.0.1:0", f"127.0.0.1:{P[key]}"),
            )
            env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "TOKIO_WORKER_THREADS")}
            if threads:
                env["TOKIO_WORKER_THREADS"] = threads
            if rust_log:
                env["RUST_LOG"] = rust_log
            p = self.spawn(f"authproxy-{key}", [self.binary, "run", "--config", conf], env=env)
            wait_port(P[key], p)
            time.sleep(0.2)
            self.idle_rss[key] = status_kb([p.pid], "VmRSS")
            self.ap[key] = p

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

    # -- systems and checks

    def systems(self):
        P = self.port
        return {
            "direct (nginx upstream)": (P["up"], "", None),
            "authproxy, 1 worker thread": (P["ap1"], "/s", self.ap["ap1"]),
            "authproxy, default runtime (2 threads)": (P["ap"], "/s", self.ap["ap"]),
            "nginx, 1 worker": (P["nginx"], "", self.nginx),
            "haproxy, nbthread 1": (P["haproxy"], "", self.haproxy),
        }

    def check(self):
        """Every path works and carries the injected credential."""
        problems = []
        for name, (port, prefix, _) in self.systems().items():
            want = b"" if prefix == "" and "direct" in name else f"Bearer {TOKEN}".encode()
            s, body = http_get(port, prefix + "/auth")
            if s != 200 or body != want:
                problems.append(f"{name}: /auth -> {s} {body[:80]!r}")
            s, body = http_get(port, prefix + "/large")
            if s != 200 or len(body) != 64 * 1024:
                problems.append(f"{name}: /large -> {s}, {len(body)} bytes")
            s, body = http_get(port, prefix + "/upload", method="POST", body=b"x" * 65536)
            if s != 200 or body != b"ok\n":
                problems.append(f"{name}: POST /upload -> {s} {body[:80]!r}")
        s, body = http_get(self.port["ap"], "/o/auth")
        if s != 200 or not body.startswith(b"Bearer cc-token-"):
            problems.append(f"authproxy oauth2 route: /o/auth -> {s} {body[:80]!r}")
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
        log("sanity checks passed (credential injected by every proxy, bodies intact, upstream keep-alive after POST)")

    # -- runs

    def wrk(self, port, path, conns, seconds, lua=None):
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "2s", "--latency"]
        if lua:
            cmd += ["-s", lua]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20).stdout
        return parse_wrk(out)

    def measure(self, port, path, conns, seconds, proc, lua=None):
        pids = tree(proc.pid) if proc else []
        up_pids = tree(self.up.pid)
        c0, u0 = cpu_seconds(pids), cpu_seconds(up_pids)
        with RssSampler(pids) as rss:
            r = self.wrk(port, path, conns, seconds, lua)
        c1, u1 = cpu_seconds(pids), cpu_seconds(up_pids)
        n = max(r["requests"], 1)
        r["cpu_us"] = (c1 - c0) / n * 1e6 if proc else None
        r["up_cpu_us"] = (u1 - u0) / n * 1e6
        r["rss_kb"] = rss.max_kb if proc else None
        r["hwm_kb"] = status_kb(pids, "VmHWM") if proc else None
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
        log(f"temp dir {self.tmp}")
        self.start_all()
        self.check()
        idle = {k: v for k, v in self.idle_rss.items()}
        big = self.big_transfers()
        tokens_before = json.loads(http_get(self.port["token"], "/count")[1])["token_requests"]

        systems = self.systems()
        scenarios = [
            ("small GET (100 B), 1 connection", "/small", 1, None),
            ("small GET (100 B), 64 connections", "/small", 64, None),
            ("64 KiB GET, 64 connections", "/large", 64, None),
            ("64 KiB POST, 64 connections", "/upload", 64, self.post_lua),
        ]
        extras = [
            # (scenario index, row name, port, prefix, process)
            (0, "authproxy oauth2 client_credentials (cached token), default runtime", self.port["ap"], "/o", self.ap["ap"]),
            (1, "authproxy oauth2 client_credentials (cached token), default runtime", self.port["ap"], "/o", self.ap["ap"]),
            (1, "authproxy, default runtime, RUST_LOG=warn (no access log)", self.port["apq"], "/s", self.ap["apq"]),
        ]
        plan = []
        for rep in range(REPS):
            names = list(systems)
            k = rep % len(names)
            order = names[k:] + names[:k]  # alternate who goes first
            for si, sc in enumerate(scenarios):
                for name in order:
                    port, prefix, proc = systems[name]
                    plan.append((rep, si, name, port, prefix + sc[1], sc[2], proc, sc[3]))
                for ei, rname, port, prefix, proc in extras:
                    if ei == si:
                        plan.append((rep, si, rname, port, prefix + sc[1], sc[2], proc, sc[3]))

        # Warm-up: 1 s per system (pools, token, page cache).
        warm = [(n, v) for n, v in systems.items()] + [("oauth", (self.port["ap"], "/o", self.ap["ap"])),
                                                        ("quiet", (self.port["apq"], "/s", self.ap["apq"]))]
        elapsed = time.time() - self.start
        budget = TOTAL_LIMIT - RESERVE - elapsed - len(warm) * 1.5
        fit = int(budget / len(plan) - 0.6)
        per_run = max(min(RUN_SECONDS, fit), min(2, RUN_SECONDS))
        if fit < RUN_SECONDS:
            self.notes.append(
                f"Time budget was short (slow build or install; limit {TOTAL_LIMIT:.0f} s for the whole script): "
                f"runs were cut to {per_run} s."
            )
        planned = len(warm) * 1.5 + len(plan) * (per_run + 0.6)
        log(f"plan: {len(plan)} wrk runs x {per_run}s ({REPS} repetitions, systems alternating) "
            f"+ warm-up = about {planned / 60:.1f} min (elapsed so far {elapsed:.0f}s, limit {TOTAL_LIMIT:.0f}s)")
        for n, (port, prefix, _) in warm:
            self.wrk(port, prefix + "/small", 64, 1)

        results = {}
        skipped = 0
        load_start = open("/proc/loadavg").read().split()[:3]
        for i, (rep, si, name, port, path, conns, proc, lua) in enumerate(plan):
            if time.time() - self.start > TOTAL_LIMIT - RESERVE + 10:
                skipped = len(plan) - i
                self.notes.append(f"Time limit reached: the last {skipped} runs were skipped.")
                break
            r = self.measure(port, path, conns, per_run, proc, lua)
            results.setdefault((si, name), []).append(r)
            log(f"rep {rep + 1} | {scenarios[si][0]} | {name}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                f"p99 {r['p99']:.2f} ms, cpu {fmt(r['cpu_us'])} us/req, errors {r['errors']}")
        load_end = open("/proc/loadavg").read().split()[:3]
        tokens_after = json.loads(http_get(self.port["token"], "/count")[1])["token_requests"]
        hwm = {name: status_kb(tree(proc.pid), "VmHWM") for name, (_, _, proc) in systems.items() if proc}
        report = self.report(scenarios, systems, extras, results, idle, big, hwm, per_run,
                             tokens_before, tokens_after, load_start, load_end)
        with open(self.results, "w") as f:
            f.write(report)
        print(report, flush=True)

    # -- report

    def report(self, scenarios, systems, extras, results, idle, big, hwm, per_run,
               tokens_before, tokens_after, load_start, load_end):
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
            f"- authproxy: {version([self.binary, '--version'])} (release build, git {version(['git', '-C', os.path.dirname(self.binary), 'rev-parse', '--short', 'HEAD'])} + uncommitted changes)",
            f"- nginx {version(['nginx', '-v']).split('/')[-1]}; HAProxy {version(['haproxy', '-v']).split()[2]}; "
            f"wrk {version(['wrk', '-v']).split()[1]}; curl {version(['curl', '--version']).split()[1]}; "
            f"{version(['rustc', '--version'])}",
            f"- load average at start {' '.join(load_start)}, at end {' '.join(load_end)}",
            f"- method: wrk `-t1 --timeout 2s --latency`, {per_run} s per run, {REPS} repetitions, systems in rotating order; "
            "everything (wrk, upstream, proxy) shares the same cores, so absolute numbers are noisy and "
            "lower than on a real machine; compare ratios and CPU per request.",
            "- upstream: nginx, 1 worker, `access_log off`; `/small` 100 B, `/large` 64 KiB, `/upload` accepts 64 KiB and answers `ok`.",
            "- proxies inject `Authorization: Bearer …`: authproxy static provider (`[store] kind = \"memory\"`, default logging = "
            "one access-log line per request on stderr, redirected to a file); nginx 1 worker, keep-alive upstream pool 64; "
            "HAProxy `nbthread 1`, `http-reuse always`.",
            "- proxy CPU = utime+stime of the proxy process (for nginx master+worker) over the run / requests completed; "
            "upstream CPU likewise for the upstream nginx. p50/p99 = median over the repetitions. "
            "RSS = highest VmRSS sampled every 100 ms during the first repetition's run; the allocator keeps "
            "freed memory, so later scenarios include earlier growth (VmHWM, the peak since start, is listed at the end).",
            "",
        ]
        direct = "direct (nginx upstream)"
        for si, (sname, _, _, _) in enumerate(scenarios):
            lines += [f"## {sname}", "",
                      "| system | req/s median (min..max) | vs direct | p50 | p99 | proxy CPU µs/req | upstream CPU µs/req | RSS (1st rep) | errors |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            base = results.get((si, direct))
            base_rps = statistics.median([r["rps"] for r in base]) if base else None
            rows = list(systems) + [e[1] for e in extras if e[0] == si]
            for name in rows:
                rs = results.get((si, name))
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
        lines += ["## Memory (authproxy)", "",
                  "| measurement | value |", "|---|---:|"]
        lines.append(f"| idle RSS after start, 1 worker thread | {mib(idle['ap1'])} |")
        lines.append(f"| idle RSS after start, default runtime | {mib(idle['ap'])} |")
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
                f"| {label}: max VmRSS − idle | {mib(b['max_kb'] - idle['ap'])} "
                f"(HTTP {b['status']}, {b['bytes'] / ONE_GIB:.2f} GiB in {b['seconds']:.1f} s, "
                f"{rate}{'' if ok else ', INCOMPLETE'}) |"
            )
        lines.append("")
        lines += ["VmHWM (peak RSS since start) at the end: " + ", ".join(f"{n}: {mib(v)}" for n, v in hwm.items()), ""]
        lines += [
            "## OAuth2 row",
            "",
            f"The client_credentials provider's token endpoint (python mock, 1 h tokens) was asked "
            f"{tokens_after} time(s) in total, {tokens_after - tokens_before} time(s) during the load runs: "
            "the token is cached, so the oauth2 rows measure the same per-request work as the static rows.",
            "",
        ]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


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
    if len(sys.argv) >= 3 and sys.argv[1] == "token-mock":
        return token_mock(int(sys.argv[2]))
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
