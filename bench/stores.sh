#!/usr/bin/env bash
# The session stores compared (and the unpinned proxy-hop table this was
# before issue 17 moved that to bench/run.sh): requests/s and p50/p99
# latency over HTTPS keep-alive,
# all in one run on this machine, with one load generator (wrk) and one
# connection count for every target:
#   (a) the upstream directly (nginx serving a fixed answer, over HTTPS;
#       plain HTTP too, for reference)
#   (b) nginx as a plain TLS reverse proxy to that upstream
#   (c) authgate on a public route to that upstream
#   (d) authgate on an authenticated route, with a valid session cookie
#   (e) nginx with auth_request to a session check on the upstream (the
#       forward-auth pattern of Authelia and oauth2-proxy deployments)
#   (f) as (d), on a second gateway whose sessions live in memory only
#       ([store] backend = "memory"; (d) uses the default local state file)
#   (g) as (d), on a third gateway whose sessions live in Redis (a
#       redis-server started here), with the Redis calls per request
# and the ratios between them, then sign-in latency (p50 of sequential
# sign-ins) with each store. Loopback only; it stops by itself. Not a
# test: CI does not run it. The session store has its own benchmark:
# `cargo bench --bench session_store`.
#
# Usage: bench/stores.sh [SECONDS_PER_TARGET=10] [CONNECTIONS=50]
#        AUTHGATE_BIN=path bench/stores.sh ...   (another build)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
connections=${2:-50}

. bench/common.sh
need nginx nginx-light
need wrk wrk
need openssl openssl
need redis-server redis-server

# AUTHGATE_BIN=path measures another build (an older commit's, say).
if [ -z "${AUTHGATE_BIN:-}" ]; then
  cargo build --release --quiet
  AUTHGATE_BIN=target/release/authgate
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

up_plain=$(free_port); up_tls=$(free_port); nginx_proxy=$(free_port); nginx_auth=$(free_port)
gateway=$(free_port); gateway_mem=$(free_port); gateway_redis=$(free_port)
redis_port=$(free_port); redis_ops=$(free_port)

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
    # The session check a forward-auth setup asks on every request: as cheap
    # as a check can be (a fixed cookie value), so nginx's figure is its best.
    location = /_session_check {
      if (\$cookie_session = "valid-bench-session") { return 204; }
      return 401;
    }
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
  server {
    listen 127.0.0.1:$nginx_auth ssl http2;
    $tls_common
    location / {
      auth_request /_auth;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
    location = /_auth {
      internal;
      proxy_pass http://app/_session_check;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
sed -i "s#ERRLOG#proxy.err#" "$work/proxy.conf"

bench_password="bench-password-$RANDOM$RANDOM"
printf '[users.bench]\npassword = "%s"\nroles = ["user"]\n' \
  "$(printf '%s\n' "$bench_password" | "$AUTHGATE_BIN" hash-password)" > "$work/users.toml"
cat > "$work/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$gateway"
cert = "bench.crt"
key = "bench.key"
[upstream]
url = "http://127.0.0.1:$up_plain"
[users]
file = "users.toml"
[[rule]]
path = "/public/**"
access = "public"
[[rule]]
path = "/admin/**"
roles = ["admin"]
[[rule]]
path = "/**"
access = "authenticated"
CONF

sed -e "s/127.0.0.1:$gateway/127.0.0.1:$gateway_mem/" "$work/gateway.toml" > "$work/gateway-memory.toml"
printf '[store]\nbackend = "memory"\n' >> "$work/gateway-memory.toml"

sed -e "s/127.0.0.1:$gateway/127.0.0.1:$gateway_redis/" \
  -e "s/^\\[server\\]$/[server]\\nops_listen = \"127.0.0.1:$redis_ops\"/" \
  "$work/gateway.toml" > "$work/gateway-redis.toml"
printf '[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' "$redis_port" >> "$work/gateway-redis.toml"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --maxmemory-policy noeviction --dir "$work" >/dev/null & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

nginx -c "$work/upstream.conf" & pids+=($!)
nginx -c "$work/proxy.conf" & pids+=($!)
"$AUTHGATE_BIN" run -c "$work/gateway.toml" 2> "$work/authgate.log" & pids+=($!)
gateway_pid=$!
"$AUTHGATE_BIN" run -c "$work/gateway-memory.toml" 2> "$work/authgate-memory.log" & pids+=($!)
gateway_mem_pid=$!
"$AUTHGATE_BIN" run -c "$work/gateway-redis.toml" 2> "$work/authgate-redis.log" & pids+=($!)
gateway_redis_pid=$!

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}
for port in $up_plain $up_tls $nginx_proxy $nginx_auth $gateway $gateway_mem $gateway_redis; do wait_port "$port"; done

# A real session: the login form's CSRF cookie and field, then the password.
sign_in() { # port -> the session cookie's value
  local jar="$work/cookies-$1" csrf session
  curl -sk -c "$jar" -o /dev/null "https://127.0.0.1:$1/.gateway/login"
  csrf=$(awk '$6 == "__Host-authgate-login" {print $7}' "$jar")
  session=$(curl -sk -b "$jar" -D - -o /dev/null \
    --data-urlencode "csrf=$csrf" --data-urlencode "username=bench" \
    --data-urlencode "password=$bench_password" "https://127.0.0.1:$1/.gateway/login" |
    tr -d '\r' | sed -n 's/^set-cookie: __Host-authgate=\([^;]*\).*/\1/ip')
  [ -n "$session" ] || { echo "could not sign in to the gateway on port $1" >&2; exit 1; }
  echo "$session"
}
session=$(sign_in "$gateway")
session_mem=$(sign_in "$gateway_mem")
session_redis=$(sign_in "$gateway_redis")
round_trips() { curl -s "http://127.0.0.1:$redis_ops/metrics" | awk '$1 == "authgate_store_round_trips_total" {print $2}'; }

declare -A rps p50 p99 cpu
wrk_headers=()
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
  wrk -t2 -c"$connections" -d2s "${wrk_headers[@]}" "$url" >/dev/null  # warm-up
  local out before after requests
  before=$(ticks "$@")
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "${wrk_headers[@]}" "$url")
  after=$(ticks "$@")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  last_requests=$requests
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
measure "c: authgate public" "https://127.0.0.1:$gateway/public/" "$gateway_pid"
wrk_headers=(-H "Cookie: __Host-authgate=$session")
measure "d: authgate session" "https://127.0.0.1:$gateway/app/" "$gateway_pid"
wrk_headers=(-H "Cookie: __Host-authgate=$session_mem")
measure "f: authgate, memory" "https://127.0.0.1:$gateway_mem/app/" "$gateway_mem_pid"
wrk_headers=(-H "Cookie: session=valid-bench-session")
measure "e: nginx auth_request" "https://127.0.0.1:$nginx_auth/app/" $(pgrep -P "$(cat "$work/proxy.pid")")
wrk_headers=()

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "authgate/nginx   requests/s: $(ratio "${rps[c: authgate public]}" "${rps[b: nginx proxy]}")"
echo "authgate/direct  requests/s: $(ratio "${rps[c: authgate public]}" "${rps[a: direct (HTTPS)]}")"
echo "authgate/nginx   proxy CPU per request: $(ratio "${cpu[c: authgate public]}" "${cpu[b: nginx proxy]}")"
echo "d/b  authgate session / nginx plain proxy, requests/s: $(ratio "${rps[d: authgate session]}" "${rps[b: nginx proxy]}")"
echo "d/e  authgate session / nginx auth_request, requests/s: $(ratio "${rps[d: authgate session]}" "${rps[e: nginx auth_request]}")"
echo "d/c  authenticated / public route on authgate, requests/s: $(ratio "${rps[d: authgate session]}" "${rps[c: authgate public]}")"
echo "d/f  authenticated, local store / memory store, requests/s: $(ratio "${rps[d: authgate session]}" "${rps[f: authgate, memory]}")"

# One run each is at the mercy of whatever else the machine did in those
# seconds, and the later of back-to-back runs tends to do better (measured:
# the same store wins or loses by its place): four rounds of d, f and g,
# the order rotated every round, and the median of the ratios.
echo
echo "local / memory / redis store on the authenticated route, rotating rounds:"
store_ratios=(); redis_ratios=(); trips_before=$(round_trips); redis_requests=0
for round in 1 2 3 4; do
  case $round in 1) order=(d f g);; 2) order=(g d f);; 3) order=(f g d);; 4) order=(d g f);; esac
  for which in "${order[@]}"; do
    case $which in
      d) wrk_headers=(-H "Cookie: __Host-authgate=$session")
         measure "d: local, round $round" "https://127.0.0.1:$gateway/app/" "$gateway_pid" ;;
      f) wrk_headers=(-H "Cookie: __Host-authgate=$session_mem")
         measure "f: memory, round $round" "https://127.0.0.1:$gateway_mem/app/" "$gateway_mem_pid" ;;
      g) wrk_headers=(-H "Cookie: __Host-authgate=$session_redis")
         measure "g: redis, round $round" "https://127.0.0.1:$gateway_redis/app/" "$gateway_redis_pid"
         redis_requests=$((redis_requests + last_requests)) ;;
    esac
  done
  store_ratios+=("$(ratio "${rps[d: local, round $round]}" "${rps[f: memory, round $round]}")")
  redis_ratios+=("$(ratio "${rps[g: redis, round $round]}" "${rps[d: local, round $round]}")")
done
wrk_headers=()
median4() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", (v[2] + v[3]) / 2 }'; }
echo "g/d per round: ${redis_ratios[*]}; median $(median4 "${redis_ratios[@]}")"
trips=$(( $(round_trips) - trips_before ))
echo "Redis calls per request on (g), warm-up included: $(awk -v t="$trips" -v n="$redis_requests" 'BEGIN { printf "%.5f (%d calls, %d requests measured)", t / n, t, n }')"
echo "d/f per round: ${store_ratios[*]}; median $(median4 "${store_ratios[@]}")"

# Sign-in latency: sequential sign-ins (argon2 included), alternating
# between the two gateways so that both see the same machine.
signin_ms() { # port -> milliseconds of one sign-in POST
  local jar="$work/cookies-$1" csrf
  csrf=$(awk '$6 == "__Host-authgate-login" {print $7}' "$jar")
  curl -sk -b "$jar" -o /dev/null -w '%{http_code} %{time_total}\n' \
    --data-urlencode "csrf=$csrf" --data-urlencode "username=bench" \
    --data-urlencode "password=$bench_password" "https://127.0.0.1:$1/.gateway/login" |
    awk '$1 != 303 { print "sign-in answered " $1 > "/dev/stderr"; exit 1 } { printf "%.3f\n", $2 * 1000 }'
}
: > "$work/signin-local"; : > "$work/signin-memory"
for _ in $(seq 40); do
  signin_ms "$gateway" >> "$work/signin-local"
  signin_ms "$gateway_mem" >> "$work/signin-memory"
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
local_p50=$(median "$work/signin-local"); memory_p50=$(median "$work/signin-memory")
echo "sign-in p50: local store ${local_p50} ms, memory store ${memory_p50} ms, difference $(awk -v a="$local_p50" -v b="$memory_p50" 'BEGIN { printf "%.2f", a - b }') ms (40 each)"
sleep 0.2  # the log flushes every 50 ms
lines=$(grep -c 'authgate::access' "$work/authgate.log" || true)
echo "(authgate logged $lines request lines, nginx $(wc -l < "$work/proxy-access.log") access lines)"
