#!/usr/bin/env python3
"""User-space instructions per request, counted by callgrind: authproxy, the
hyper floor (bench/hyper_floor.rs) and nginx doing the same header injection.

Run through bench/callgrind.sh, which checks the tools and builds the
binaries, then: python3 bench/callgrind.py AUTHPROXY FLOOR TMPDIR [OUT_MD]

Method. Only the proxy runs under valgrind (`--instr-atstart=no`: it runs
uninstrumented, about 5x slower, until told otherwise); the upstream nginx
and the load generator below run natively, so their instructions are not
counted. For each row (path x connections) the proxy is warmed up
uninstrumented, then two phases run: N requests, then 10N requests, each
over C fresh keep-alive connections. A phase is

    callgrind_control -z        (zero the counters)
    callgrind_control -i on     (instrument)
    exactly N (or 10N) requests, all answered 200 with the right body size
    wait until the proxy's CPU time stops moving (closes processed)
    callgrind_control -d        (dump: the Ir since the zero)
    callgrind_control -i off

and the figure is (Ir(10N) - Ir(N)) / 9N: what every phase pays once (C
connects and closes, the floor's C upstream connects, the vgdb hand-shakes
that deliver the commands) cancels out. callgrind counts the instructions
the guest program executes, so the figure does not move with machine load;
it does differ a little from `perf stat` on the bare machine (under valgrind
the vDSO is not used, so clock reads are syscalls, and glibc picks its
string functions for the CPU valgrind emulates).

One of those string functions is set here, for every system alike:
glibc's memcpy switches to `rep movsb` above a size threshold, and
callgrind counts that instruction's iterations, where the CPU retires it
as one instruction. Copying a 64 KiB POST body into the replay buffer
counted 21.0k instructions in 8 KiB pieces and 65.4k in 16 KiB pieces,
6.3k in the vector loop, so the same request's figure moved by 44k with
nothing but how its body split into reads. The proxy runs with
GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=16777216, which keeps
every memcpy up to 16 MiB in the vector loop, counted as executed.

Environment: N (requests in the short phase; default 1000), RUNS (separate
valgrind processes per system, default 2, to show the spread), SYSTEMS
(default "authproxy floor duties nginx nginx-log"; `duties` is the floor with
FLOOR_DUTIES=all, or the subset FLOOR_DUTIES names; `duties-read`, not run by default, is
`duties` reading a client at most 16 KiB - 1 bytes at a time, as authproxy does while a body
streams in: FLOOR_READ, see bench/hyper_floor.rs), PATHS ("small large upload"; also "close", a connection per request), CONNS
("1 64"), ROUTES (default 1: with e.g. 1000, authproxy and nginx get that
many routes, each with its own credential, and the load goes to the last
one; the floor has no route table and keeps its one route), KIND (authproxy's credential:
static (default), allow (static with an `allow` policy), basic, query,
aws_sigv4), PROFILE_DIR
(keep each 10N phase's dump there, with `--dump-instr=yes`, for
callgrind_annotate / kcachegrind).
"""

import datetime
import glob
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import cpu_seconds, free_port, http_get, log, wait_port  # noqa: E402

TOKEN = "bench-static-token-0123456789abcdef"
PATHS = {
    # name: (label, upstream path, POST body size or None, expected body size)
    "small": ("small GET (100 B)", "/small", None, 100),
    "large": ("64 KiB GET", "/large", None, 65536),
    "upload": ("64 KiB POST", "/upload", 65536, 3),
    # A connection per request (`Connection: close`), as many legacy
    # clients do: the figure includes accepting and closing the connection.
    "close": ("small GET, a connection per request", "/small", None, 100),
}
CLOSE_PATHS = {"close"}
# KIND: the credential on authproxy's route (one route; nginx and the floor
# always inject the static header): provider body, route `allow` or None.
KINDS = {
    "static": (f'type = "static"\nheaders = {{ Authorization = "Bearer {TOKEN}" }}', None),
    "allow": (f'type = "static"\nheaders = {{ Authorization = "Bearer {TOKEN}" }}',
              '["GET /small", "GET /large", "POST /upload", "GET /admin/**"]'),
    "basic": ('type = "basic"\nusername = "bench-user"\npassword = "bench-password-0123456789"', None),
    "query": ('type = "query"\nparams = { api_key = "bench-key-0123456789abcdef" }', None),
    "aws_sigv4": ('type = "aws_sigv4"\naccess_key_id = "AKIDEXAMPLE"\n'
                  'secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"\n'
                  'region = "us-east-1"\nservice = "execute-api"', None),
}
SYSTEM_LABELS = {"authproxy": "authproxy", "floor": "hyper floor", "duties": "floor + duties",
                 "duties-read": "floor + duties, reads of at most 16 KiB - 1", "nginx": "nginx",
                 "nginx-log": "nginx + log, request id", "baseline": "authproxy, BASELINE build"}
# authproxy's BODY_READ (src/http/head_timeout.rs), for `duties-read`.
BODY_READ = 16 * 1024 - 1
# nginx doing what authproxy does by default on top of the proxying: an
# access-log line per request (the fields SPEC.md lists, batched as
# authproxy's writer does: 64 KiB or 50 ms) and the client's X-Request-Id
# kept or one made, sent upstream and back.
NGINX_LOG_HTTP = """  map $http_x_request_id $reqid { default $http_x_request_id; "" $request_id; }
  log_format spec '$msec $reqid $remote_addr:$remote_port $request_method $uri $status '
                  '$request_length $bytes_sent $upstream_response_time $request_time';
"""
# memcpy in the vector loop, not `rep movsb` (see the docstring).
REP_MOVSB_TUNABLE = "glibc.cpu.x86_rep_movsb_threshold=16777216"
PHASE_TIMEOUT = 1800.0  # seconds; a phase of 10N requests under valgrind


# --------------------------------------------------------- load generator


class Conn:
    __slots__ = ("sock", "left", "out", "buf", "need")

    def __init__(self, sock, left):
        self.sock, self.left, self.out, self.buf, self.need = sock, left, b"", bytearray(), None


def exact_load(port, path, n, conns, body_size=None, expect_len=None, timeout=PHASE_TIMEOUT, close=False):
    """Sends exactly `n` requests over `conns` keep-alive connections (one
    request in flight per connection, like wrk), checks every answer is a 200
    with `expect_len` body bytes, closes the connections. Raises on anything
    else. Connection i sends n // conns requests, the first n % conns one more.
    With `close`, every request says `Connection: close` and goes on a new
    connection (`conns` of them open at a time)."""
    if n < conns:
        raise ValueError(f"{n} requests cannot keep {conns} connections busy")
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()
    if body_size is not None:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {body_size}\r\n\r\n"
        ).encode() + b"x" * body_size
    sel = selectors.DefaultSelector()
    active = 0

    def open_conn():
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        return s

    for i in range(conns):
        c = Conn(open_conn(), n // conns + (1 if i < n % conns else 0))
        c.out = memoryview(head)
        sel.register(c.sock, selectors.EVENT_WRITE, c)
        active += 1
    deadline = time.time() + timeout
    done = 0
    try:
        while active:
            if time.time() > deadline:
                raise RuntimeError(f"load: {done} of {n} answers after {timeout:.0f}s")
            for key, ev in sel.select(timeout=1.0):
                c = key.data
                if ev & selectors.EVENT_WRITE:
                    try:
                        sent = c.sock.send(c.out)
                    except BlockingIOError:
                        continue
                    c.out = c.out[sent:]
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                try:
                    chunk = c.sock.recv(262144)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise RuntimeError(f"load: connection closed by the proxy after {done} answers")
                c.buf += chunk
                if not answer_complete(c, expect_len, close):
                    continue
                done += 1
                c.left -= 1
                c.buf, c.need = bytearray(), None
                if c.left and close:
                    sel.unregister(c.sock)
                    c.sock.close()
                    c.sock = open_conn()
                    c.out = memoryview(head)
                    sel.register(c.sock, selectors.EVENT_WRITE, c)
                elif c.left:
                    c.out = memoryview(head)
                    sel.modify(c.sock, selectors.EVENT_WRITE, c)
                else:
                    sel.unregister(c.sock)
                    c.sock.close()
                    active -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return done


def answer_complete(c, expect_len, close=False):
    """True once c.buf holds one whole answer; raises if it is not the
    expected 200 or more than one answer arrived."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(c.buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if status != 200:
            raise RuntimeError(f"load: answer {status}: {bytes(c.buf[:300])!r}")
        if not close and "close" in fields.get("connection", "").lower():
            raise RuntimeError("load: the proxy asked to close a keep-alive connection")
        if "chunked" in fields.get("transfer-encoding", "").lower():
            c.need = ("chunked", end + 4)
        else:
            c.need = ("length", end + 4 + int(fields.get("content-length", "0")))
    kind, at = c.need
    if kind == "length":
        if len(c.buf) < at:
            return False
        if len(c.buf) > at:
            raise RuntimeError("load: bytes after the answer (nothing was pipelined)")
        body_len = at - c.buf.find(b"\r\n\r\n") - 4
    else:
        if not c.buf.endswith(b"0\r\n\r\n"):
            return False
        body_len, pos = 0, at
        while True:
            eol = c.buf.index(b"\r\n", pos)
            size = int(bytes(c.buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                break
            body_len += size
            pos = eol + 2 + size + 2
    if expect_len is not None and body_len != expect_len:
        raise RuntimeError(f"load: body of {body_len} bytes, expected {expect_len}")
    return True


# ----------------------------------------------------------------- setup


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_conf(tmp, name, port, body, http_extra="", under_valgrind=False):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    temps = "\n".join(f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # Under valgrind the process that does the work must be the one counted:
    # no master, no fork, no daemon.
    top = "master_process off;\n" if under_valgrind else "worker_processes 1;\n"
    return write(
        os.path.join(tmp, f"{name}.conf"),
        f"""{top}daemon off;
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


class Callgrind:
    def __init__(self, authproxy, floor, tmp, out):
        # `duties`: the floor doing the per-request work the contract asks
        # of every route (FLOOR_DUTIES=all; see bench/hyper_floor.rs).
        # `baseline`: another build of authproxy (BASELINE=path), measured
        # in the same invocation: separate invocations of one binary counted
        # 40,066 to 40,578 instructions per small GET (1.3 %), the runs
        # inside one agree within 0.1 %, so a change is measured against
        # its baseline here.
        self.bins = {"authproxy": authproxy, "floor": floor, "duties": floor, "duties-read": floor,
                     "baseline": os.environ.get("BASELINE", "")}
        self.tmp, self.out = tmp, out
        self.n = int(os.environ.get("N", "1000"))
        self.runs = int(os.environ.get("RUNS", "2"))
        self.systems = os.environ.get("SYSTEMS", "authproxy floor duties nginx nginx-log").split()
        self.paths = os.environ.get("PATHS", "small large upload close").split()
        self.conns = [int(c) for c in os.environ.get("CONNS", "1 64").split()]
        self.profile_dir = os.environ.get("PROFILE_DIR")
        self.routes = int(os.environ.get("ROUTES", "1"))
        self.kind = os.environ.get("KIND", "static")
        if self.kind not in KINDS:
            sys.exit(f"KIND: unknown credential kind {self.kind!r} (known: {' '.join(KINDS)})")
        if self.kind != "static" and self.routes > 1:
            sys.exit("KIND applies to the single-route config only (ROUTES=1)")
        for s in self.systems:
            if s not in SYSTEM_LABELS:
                sys.exit(f"SYSTEMS: unknown system {s!r} (known: {' '.join(SYSTEM_LABELS)})")
            if s == "baseline" and not os.access(self.bins[s], os.X_OK):
                sys.exit("SYSTEMS: `baseline` needs BASELINE=path to another authproxy binary")
        for p in self.paths:
            if p not in PATHS:
                sys.exit(f"PATHS: unknown path {p!r} (known: {' '.join(PATHS)})")
        if self.n < max(self.conns):
            sys.exit(f"N={self.n} is below the largest connection count {max(self.conns)}")
        self.procs = []

    def spawn(self, args, log_name, env=None):
        out = open(os.path.join(self.tmp, log_name), "wb")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env or os.environ.copy(), cwd=self.tmp)
        self.procs.append(p)
        with open(os.path.join(self.tmp, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)

    def start_upstream(self):
        www = os.path.join(self.tmp, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "small"), "wb") as f:
            f.write(b"s" * 99 + b"\n")
        with open(os.path.join(www, "large"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        self.up_port = free_port()
        conf = nginx_conf(self.tmp, "nginx-upstream", self.up_port, f"""    root {www};
    default_type application/octet-stream;
    location = /upload {{
      client_max_body_size 1m;
      client_body_buffer_size 128k;
      return 200 "ok\\n";
    }}
""")
        p = self.spawn(["nginx", "-e", f"{self.tmp}/nginx-upstream/error.log", "-p", self.tmp, "-c", conf],
                       "nginx-upstream.log")
        wait_port(self.up_port, p)

    def command(self, system, port):
        """(argv, env, URL prefix) of one system, listening on `port`."""
        many = self.routes > 1 and system not in ("floor", "duties", "duties-read")
        last = f"/r{self.routes - 1:04d}"
        if system in ("nginx", "nginx-log"):
            if many:
                # As bench/compare.py's many-routes row: one prefix location
                # per route, each with its own credential.
                locations = "".join(
                    f'    location /r{i:04d}/ {{ proxy_pass http://backend/; proxy_set_header Connection ""; '
                    f'proxy_set_header Authorization "Bearer {TOKEN}-{i:04d}"; }}\n'
                    for i in range(self.routes)
                )
            else:
                locations = f"""    location / {{
      proxy_pass http://backend;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {TOKEN}";
    }}
"""
            http_extra = f"  upstream backend {{ server 127.0.0.1:{self.up_port}; keepalive 64; }}"
            if system == "nginx-log":
                http_extra += "\n" + NGINX_LOG_HTTP
                locations = (f"    access_log {self.tmp}/nginx-front-{port}/access.log spec buffer=64k flush=50ms;\n"
                             "    add_header X-Request-Id $reqid always;\n"
                             "    proxy_set_header X-Request-Id $reqid;\n" + locations)
            conf = nginx_conf(self.tmp, f"nginx-front-{port}", port, f"""    client_max_body_size 2g;
    client_body_buffer_size 128k;
    proxy_http_version 1.1;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_max_temp_file_size 0;
{locations}""", http_extra=http_extra, under_valgrind=True)
            argv = ["nginx", "-e", f"{self.tmp}/nginx-front-{port}/error.log", "-p", self.tmp, "-c", conf]
            return argv, None, last if many else ""
        head = f'[server]\nlisten = "127.0.0.1:{port}"\n\n[store]\nkind = "memory"\n\n'
        if many:
            # Route i is /rNNNN/ with its own static provider; the load goes
            # to the last one. (The floor has no route table: it keeps one.)
            body = "".join(
                f'[providers.p{i:04d}]\ntype = "static"\nheaders = {{ Authorization = "Bearer {TOKEN}-{i:04d}" }}\n\n'
                for i in range(self.routes)
            ) + "".join(
                f'[[routes]]\nprefix = "/r{i:04d}/"\nupstream = "http://127.0.0.1:{self.up_port}/"\nprovider = "p{i:04d}"\n\n'
                for i in range(self.routes)
            )
        else:
            provider, allow = KINDS[self.kind]
            body = (f'[providers.cred]\n{provider}\n\n'
                    f'[[routes]]\nprefix = "/s/"\nupstream = "http://127.0.0.1:{self.up_port}/"\nprovider = "cred"\n'
                    + (f'allow = {allow}\n' if allow else ''))
        # In a folder of its own: the config watch wakes for any change in
        # the config's folder and hashes the config to compare, and the
        # proxy's log is written in the temp dir, so a config next to it
        # was re-read about once a second, which under valgrind (50x
        # slower) added up to 9k instructions per request with the 1,000
        # routes config (SHA-256 of 150 KB). Not a per-request cost.
        folder = os.path.join(self.tmp, f"conf-{port}")
        os.makedirs(folder, exist_ok=True)
        conf = write(os.path.join(folder, "proxy.toml"), head + body)
        env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "TOKIO_WORKER_THREADS")}
        # One thread (the current-thread scheduler), as bench/instructions.sh
        # and the floor; default logging: one access-log line per request on
        # stderr, which goes to a file here.
        env["TOKIO_WORKER_THREADS"] = "1"
        env.pop("FLOOR_READ", None)
        if system in ("duties", "duties-read"):
            env["FLOOR_DUTIES"] = os.environ.get("FLOOR_DUTIES", "all")
        else:
            env.pop("FLOOR_DUTIES", None)
        if system == "duties-read":
            env["FLOOR_READ"] = str(BODY_READ)
        return [self.bins[system], "run", "--config", conf], env, last if many else "/s"

    def control(self, pid, *args):
        r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or "OK" not in r.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: rc {r.returncode}\n{r.stdout}{r.stderr}")

    def settle(self, pid):
        """Waits (at most 10 s) until the proxy's CPU time has not moved for
        0.15 s: the closes of the phase's connections are processed."""
        deadline = time.time() + 10
        last, still = cpu_seconds([pid]), 0
        while time.time() < deadline and still < 3:
            time.sleep(0.05)
            now = cpu_seconds([pid])
            still = still + 1 if now == last else 0
            last = now

    def phase(self, proc, out_file, port, prefix, path, n, conns, keep_as=None):
        pid = proc.pid
        _, upath, body, expect = PATHS[path]
        self.control(pid, "-z")
        self.control(pid, "-i", "on")
        t0 = time.time()
        exact_load(port, prefix + upath, n, conns, body, expect, close=path in CLOSE_PATHS)
        secs = time.time() - t0
        self.settle(pid)
        before = set(glob.glob(out_file + ".*"))
        self.control(pid, "-d")
        self.control(pid, "-i", "off")
        new = sorted(set(glob.glob(out_file + ".*")) - before, key=lambda f: int(f.rsplit(".", 1)[1]))
        if len(new) != 1:
            raise RuntimeError(f"expected one new dump next to {out_file}, found {new}")
        ir = None
        with open(new[0]) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    ir = int(line.split()[1])
                    break
        if ir is None:
            raise RuntimeError(f"{new[0]}: no summary line")
        if keep_as:
            os.replace(new[0], keep_as)
        else:
            os.remove(new[0])
        return ir, secs

    def measure_system(self, system, run):
        port = free_port()
        argv, env, prefix = self.command(system, port)
        env = dict(env or os.environ)
        env["GLIBC_TUNABLES"] = ":".join(
            t for t in (env.get("GLIBC_TUNABLES"), REP_MOVSB_TUNABLE) if t
        )
        out_file = os.path.join(self.tmp, f"callgrind-{system}-{run}.out")
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
              f"--log-file={self.tmp}/valgrind-{system}-{run}.log"]
        if self.profile_dir:
            vg.append("--dump-instr=yes")
        t0 = time.time()
        proc = self.spawn(vg + argv, f"{system}-{run}.log", env)
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{system} under valgrind exited with {proc.returncode}; see {self.tmp}/{system}-{run}.log")
            try:
                if http_get(port, prefix + "/small", timeout=30)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{system} under valgrind: no 200 on {prefix}/small after 180 s")
            time.sleep(0.2)
        log(f"run {run}: {system} up under valgrind after {time.time() - t0:.1f}s")
        results = {}
        try:
            for path in self.paths:
                for conns in self.conns:
                    _, upath, body, expect = PATHS[path]
                    # Warm-up, uninstrumented: the pool holds `conns` upstream
                    # connections, allocator caches and lazy statics are grown.
                    exact_load(port, prefix + upath, max(4 * conns, 200), conns, body, expect,
                               close=path in CLOSE_PATHS)
                    keep = None
                    if self.profile_dir:
                        keep = os.path.join(self.profile_dir, f"callgrind.{system}-{path}-c{conns}-run{run}.out")
                    ir1, s1 = self.phase(proc, out_file, port, prefix, path, self.n, conns)
                    ir10, s10 = self.phase(proc, out_file, port, prefix, path, 10 * self.n, conns, keep)
                    per = (ir10 - ir1) / (9 * self.n)
                    results[(path, conns)] = {"per": per, "fixed": ir1 - per * self.n, "secs": s1 + s10}
                    log(f"run {run}: {system} {path} c{conns}: {per / 1000:.2f}k instructions/request "
                        f"(phase constant {(ir1 - per * self.n) / 1e6:.2f}M; {s1 + s10:.0f}s under valgrind)")
        finally:
            # SIGTERM: nginx's fast stop (its graceful SIGQUIT can take a
            # minute under valgrind); authproxy drains, nothing is in flight.
            self.stop(proc)
        return results

    def run(self):
        start = time.time()
        log(f"temp dir {self.tmp}; N = {self.n}, 10N = {10 * self.n}; {self.runs} run(s) of "
            f"{', '.join(self.systems)}; paths {', '.join(self.paths)}; connections {', '.join(map(str, self.conns))}")
        self.start_upstream()
        per_run = {s: [] for s in self.systems}
        for run in range(1, self.runs + 1):
            for system in self.systems:
                per_run[system].append(self.measure_system(system, run))
        report = self.report(per_run, time.time() - start)
        if self.out:
            with open(self.out, "w") as f:
                f.write(report)
        print(report, flush=True)

    def report(self, per_run, seconds):
        def k(v):
            return f"{v / 1000:.1f}k"

        def version(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except Exception as e:  # noqa: BLE001 - a version string is best effort
                return f"? ({e})"

        git = version(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"])
        lines = [
            "## User-space instructions per request (callgrind)",
            "",
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
            f"{version(['valgrind', '--version'])}; {version([self.bins['authproxy'], '--version'])} "
            f"(bench/ at git {git}); nginx {version(['nginx', '-v']).split('/')[-1]}",
            f"- (Ir(10N) − Ir(N)) / 9N with N = {self.n}, over C keep-alive connections opened per phase; "
            f"proxy under `valgrind --tool=callgrind`, one thread (authproxy `TOKIO_WORKER_THREADS=1`, "
            f"the floor's current-thread runtime, nginx `master_process off`); upstream nginx and client uninstrumented.",
            *([f"- authproxy's route uses the `{self.kind}` credential"
               + (" with an `allow` policy" if KINDS[self.kind][1] else "")
               + "; nginx and the floor inject the static header."] if self.kind != "static" else []),
            *([f"- {self.routes:,} routes in the authproxy and nginx configs (each with its own credential; requests "
               f"go to the last one); the floor keeps its single route."] if self.routes > 1 else []),
            f"- {self.runs} run(s), each a separate valgrind process per system; the figure is the mean, "
            f"spread = (max − min) / mean over the runs, the largest of the row's systems. "
            f"Whole script: {seconds / 60:.1f} min.",
            "",
        ]
        have = {s: bool(per_run[s]) for s in per_run}
        head = "| path | connections | " + " | ".join(SYSTEM_LABELS[s] for s in self.systems)
        sep = "|---|---:|" + "---:|" * len(self.systems)
        ratios = []  # (label, numerator, denominator)
        if have.get("authproxy") and have.get("baseline"):
            ratios.append(("authproxy / baseline", "authproxy", "baseline"))
        if have.get("authproxy") and have.get("floor"):
            ratios.append(("authproxy / floor", "authproxy", "floor"))
        if have.get("authproxy") and have.get("duties"):
            ratios.append(("authproxy / (floor + duties)", "authproxy", "duties"))
        if have.get("authproxy") and have.get("duties-read"):
            ratios.append(("authproxy / (floor + duties, reads of at most 16 KiB - 1)", "authproxy", "duties-read"))
        if have.get("duties") and have.get("floor"):
            ratios.append(("(floor + duties) / floor", "duties", "floor"))
        if have.get("authproxy") and have.get("nginx"):
            ratios.append(("authproxy / nginx", "authproxy", "nginx"))
        if have.get("authproxy") and have.get("nginx-log"):
            ratios.append(("authproxy / (nginx + log, request id)", "authproxy", "nginx-log"))
        head += "".join(f" | {r[0]}" for r in ratios) + " | spread |"
        sep += "---:|" * (len(ratios) + 1)
        lines += [head, sep]
        for path in self.paths:
            for conns in self.conns:
                means, spread = {}, 0.0
                for s in self.systems:
                    vals = [r[(path, conns)]["per"] for r in per_run[s]]
                    means[s] = statistics.mean(vals)
                    spread = max(spread, (max(vals) - min(vals)) / means[s])
                row = f"| {PATHS[path][0]} | {conns} | " + " | ".join(k(means[s]) for s in self.systems)
                row += "".join(f" | {means[n] / means[d]:.2f}×" for _, n, d in ratios)
                row += f" | {spread * 100:.1f} % |"
                lines.append(row)
        lines += ["", "Each run's figures (instructions per request; phase constant = Ir(N) − N × figure):", "",
                  "| system | path | connections | " + " | ".join(f"run {i + 1}" for i in range(self.runs))
                  + " | phase constant (run 1) |",
                  "|---|---|---:|" + "---:|" * (self.runs + 1)]
        for s in self.systems:
            for path in self.paths:
                for conns in self.conns:
                    rs = [r[(path, conns)] for r in per_run[s]]
                    lines.append(f"| {SYSTEM_LABELS[s]} | {PATHS[path][0]} | {conns} | "
                                 + " | ".join(f"{r['per']:,.0f}" for r in rs)
                                 + f" | {rs[0]['fixed'] / 1e6:.2f}M |")
        lines.append("")
        return "\n".join(lines)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    cg = Callgrind(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3],
                   sys.argv[4] if len(sys.argv) == 5 else None)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        cg.run()
    finally:
        cg.stop_all()


if __name__ == "__main__":
    main()
