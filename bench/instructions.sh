#!/usr/bin/env bash
# Instructions per request: authproxy against nginx doing the same header
# injection, counted with `perf stat` (user and kernel separately). Unlike
# CPU time, instruction counts barely move when other work shares the
# machine, so this is the figure to compare before and after a change.
#
#   bash bench/instructions.sh [path/to/authproxy]   # about 15 s
#   CONNS=1 PATHS="small large upload" bash bench/instructions.sh
#   (small: 100-byte GET, large: 64 KiB GET, upload: 64 KiB POST)
#
# Needs perf, nginx, wrk and curl (bench/run.sh installs the last three).
# Uses ports BASE_PORT..BASE_PORT+2 on 127.0.0.1 (default 18801); stops
# only the processes it started.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../target/release/authproxy}
UP=${BASE_PORT:-18801}; FRONT=$((UP + 1)); AP=$((UP + 2))
T=$(mktemp -d /tmp/authproxy-insn.XXXXXX); chmod 755 $T
mkdir -p $T/www $T/up $T/front; printf 'sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\n' > $T/www/small
head -c 65536 /dev/urandom > $T/www/large
conf() { cat <<C
worker_processes 1; daemon off; pid $T/$1/nginx.pid; error_log $T/$1/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T/$1/cb; client_max_body_size 1m; client_body_buffer_size 128k; proxy_temp_path $T/$1/p; fastcgi_temp_path $T/$1/f; uwsgi_temp_path $T/$1/u; scgi_temp_path $T/$1/s;
 keepalive_requests 1000000; keepalive_timeout 65; sendfile on; tcp_nopush on; tcp_nodelay on;
 $3
 server { listen 127.0.0.1:$2 backlog=4096; $4 } }
C
}
conf up $UP "" "root $T/www; default_type application/octet-stream; location = /upload { client_max_body_size 1m; client_body_buffer_size 128k; return 200 ok; }" > $T/up.conf
printf 'wrk.method = "POST"\nwrk.body = string.rep("x", 65536)\n' > $T/post.lua
conf front $FRONT "upstream backend { server 127.0.0.1:$UP; keepalive 64; }" "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Authorization \"Bearer tok\"; proxy_buffer_size 16k; proxy_buffers 8 16k; proxy_max_temp_file_size 0; }" > $T/front.conf
cat > $T/ap.toml <<C
[server]
listen = "127.0.0.1:$AP"
[store]
kind = "memory"
[providers.static]
type = "static"
headers = { Authorization = "Bearer tok" }
[[routes]]
prefix = "/s/"
upstream = "http://127.0.0.1:$UP/"
provider = "static"
C
nginx -e $T/up/error.log -p $T -c $T/up.conf & UPPID=$!
nginx -e $T/front/error.log -p $T -c $T/front.conf & FRPID=$!
TOKIO_WORKER_THREADS=${THREADS:-1} $BIN run --config $T/ap.toml 2>$T/ap.log & APPID=$!
trap 'kill $UPPID $FRPID $APPID 2>/dev/null; wait 2>/dev/null; rm -rf $T' EXIT
for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$AP/s/small && break; sleep 0.1; done
sleep 0.3
W=$(pgrep -P $FRPID)
for path in ${PATHS:-small}; do
for sys in ap front; do
  if [ $sys = ap ]; then port=$AP; pid=$APPID; url=/s/$path; else port=$FRONT; pid=$W; url=/$path; fi
  lua=(); [ $path = upload ] && lua=(-s $T/post.lua)
  wrk -t1 -c${CONNS:-64} -d1s "${lua[@]}" http://127.0.0.1:$port$url >/dev/null
  perf stat -e instructions:u,instructions:k,task-clock -p $pid -o $T/stat -- sleep 3.5 &
  S=$!
  out=$(wrk -t1 -c${CONNS:-64} -d3s "${lua[@]}" http://127.0.0.1:$port$url)
  wait $S
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  iu=$(awk '/instructions:u/ {gsub(",","",$1); print $1}' $T/stat)
  ik=$(awk '/instructions:k/ {gsub(",","",$1); print $1}' $T/stat)
  tc=$(awk '/task-clock/ {gsub(",","",$1); print $1}' $T/stat)
  name=$([ $sys = ap ] && echo authproxy || echo nginx)
  echo "$path $name: $n requests, user $(echo "scale=1; $iu/$n/1000" | bc)k instructions/req, kernel $(echo "scale=1; $ik/$n/1000" | bc)k/req, task-clock $(echo "scale=1; $tc*1000/$n" | bc) µs/req (inflated by perf)"
done
done
