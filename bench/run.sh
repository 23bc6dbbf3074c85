#!/usr/bin/env bash
# Proxy-hop benchmark: requests/s and p50/p99 latency over HTTPS keep-alive,
# all in one run on this machine, with one load generator (wrk) and one
# connection count for every target:
#   (a) the upstream directly (nginx serving a fixed answer, over HTTPS;
#       plain HTTP too, for reference)
#   (b) nginx as a plain TLS reverse proxy to that upstream
#   (c) authgate on a public route to that upstream
# and the ratios authgate/nginx and authgate/direct. Loopback only; it stops
# by itself. Not a test: CI does not run it.
#
# Usage: bench/run.sh [SECONDS_PER_TARGET=10] [CONNECTIONS=50]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
connections=${2:-50}

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2 ..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  fi
}
need nginx nginx-light
need wrk wrk
need openssl openssl

cargo build --release --quiet

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
up_plain=$(free_port); up_tls=$(free_port); nginx_proxy=$(free_port); gateway=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/bench.key" -out "$work/bench.crt" -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null

nginx_common="pid PIDFILE; error_log $work/ERRLOG warn; daemon off; master_process on;"
tls_common="ssl_certificate $work/bench.crt; ssl_certificate_key $work/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000; keepalive_timeout 75s;"
temp_paths="client_body_temp_path $work/tmp; proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
mkdir -p "$work/tmp"

# The upstream: one worker, a fixed answer, plain HTTP and HTTPS.
cat > "$work/upstream.conf" <<CONF
${nginx_common//PIDFILE/$work/upstream.pid}
worker_processes 1;
events { worker_connections 4096; }
http {
  $temp_paths
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$up_plain;
    listen 127.0.0.1:$up_tls ssl;
    $tls_common
    location / { default_type text/plain; return 200 "hello from upstream\n"; }
  }
}
CONF
sed -i "s#ERRLOG#upstream.err#" "$work/upstream.conf"

# nginx as the reverse proxy: two workers (authgate runs two threads here),
# a kept-alive upstream pool, an access log like authgate's request log.
cat > "$work/proxy.conf" <<CONF
${nginx_common//PIDFILE/$work/proxy.pid}
worker_processes 2;
events { worker_connections 4096; }
http {
  $temp_paths
  access_log $work/proxy-access.log;
  upstream app { server 127.0.0.1:$up_plain; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_proxy ssl http2;
    $tls_common
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
sed -i "s#ERRLOG#proxy.err#" "$work/proxy.conf"

cat > "$work/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$gateway"
cert = "bench.crt"
key = "bench.key"
[upstream]
url = "http://127.0.0.1:$up_plain"
[[rule]]
path = "/admin/**"
access = "deny"
[[rule]]
path = "/**"
access = "public"
CONF

nginx -c "$work/upstream.conf" & pids+=($!)
nginx -c "$work/proxy.conf" & pids+=($!)
target/release/authgate run -c "$work/gateway.toml" 2> "$work/authgate.log" & pids+=($!)
gateway_pid=$!

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}
for port in $up_plain $up_tls $nginx_proxy $gateway; do wait_port "$port"; done

declare -A rps p50 p99 cpu
# CPU time (user+system, in clock ticks) of the given processes and their threads.
ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    read -r -a fields < "/proc/$pid/stat"
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}
measure() { # name url [pids whose CPU time per request to report]
  local name=$1 url=$2; shift 2
  wrk -t2 -c"$connections" -d2s "$url" >/dev/null  # warm-up: connections, pools, caches
  local out before after requests
  before=$(ticks "$@")
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$url")
  after=$(ticks "$@")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps[$name]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50[$name]=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$out")
  cpu[$name]=-
  if [ $# -gt 0 ]; then
    cpu[$name]=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
      'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  fi
  printf '%-22s %10s req/s   p50 %9s   p99 %9s   proxy CPU %6s us/req\n' \
    "$name" "${rps[$name]}" "${p50[$name]}" "${p99[$name]}" "${cpu[$name]}"
}

echo "wrk: 2 threads, $connections keep-alive connections, ${duration}s per target, HTTP/1.1 over TLS"
measure "direct (plain HTTP)" "http://127.0.0.1:$up_plain/"
measure "a: direct (HTTPS)" "https://127.0.0.1:$up_tls/"
measure "b: nginx proxy" "https://127.0.0.1:$nginx_proxy/" $(pgrep -P "$(cat "$work/proxy.pid")")
measure "c: authgate public" "https://127.0.0.1:$gateway/" "$gateway_pid"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "authgate/nginx   requests/s: $(ratio "${rps[c: authgate public]}" "${rps[b: nginx proxy]}")"
echo "authgate/direct  requests/s: $(ratio "${rps[c: authgate public]}" "${rps[a: direct (HTTPS)]}")"
echo "authgate/nginx   proxy CPU per request: $(ratio "${cpu[c: authgate public]}" "${cpu[b: nginx proxy]}")"
sleep 0.2  # the log flushes every 50 ms
lines=$(grep -c 'authgate::access' "$work/authgate.log" || true)
echo "(authgate logged $lines request lines, nginx $(wc -l < "$work/proxy-access.log") access lines)"
