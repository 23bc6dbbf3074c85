#!/usr/bin/env bash
# authgate against nginx on one core (issue 17), all in one run on this
# machine. The proxy under test (nginx with one worker, or authgate, whose
# runtime sizes itself to the one CPU it may use) is pinned to the last
# CPU; the load generators and the upstream (nginx, one worker, a fixed
# answer) share the others. TLS 1.3, ECDSA P-256 certificate, loopback.
#
# Targets:
#   a  the upstream directly over HTTPS (the load side's own ceiling)
#   b  nginx as a plain TLS reverse proxy (no authentication at all)
#   c  authgate on a public route
#   d  authgate on an authenticated route (a real session cookie), access
#      log on, the default local store
#   e  nginx with auth_request to a session check on the upstream (the
#      forward-auth pattern of Authelia and oauth2-proxy deployments; the
#      check is a fixed-cookie comparison, nginx's best case)
#
# Measurements (each in ROUNDS rounds, the order rotated every round, the
# median reported; the proxy's CPU time per request read from /proc):
#   1. keep-alive HTTP/1.1 rate (wrk), and p99 latency at half of nginx's
#      peak rate (h2load --rps, per-request log)
#   2. HTTP/2 rate (h2load -m 10)
#   3. new TLS connections per second, one request each (wrk, Connection: close)
#   4. idle RSS of `authgate run` with the shipped gateway.toml, and the
#      peak RSS of (d) sampled during its keep-alive runs
#   5. proxied p99 on (d) at the same fixed rate with and without a
#      sign-in flood (wrong passwords, as many at once as the hashing queue
#      takes), alternating
#   6. side by side: (b) and (d) loaded at the same time, both on the proxy
#      CPU, each by its own load generator; the CPU time per request of
#      each over the same seconds. What the machine's neighbours do then
#      hits both alike, so this ratio moves far less between runs than the
#      rates measured one after the other.
# then every ratio against the nginx figures of the same run. Not a test:
# CI does not run it. It stops by itself.
#
# authgate is the build the Dockerfile ships: profile-guided (bench/pgo.sh;
# about ten minutes of building before the first measurement).
#
# Usage: bench/run.sh [SECONDS=5] [CONNECTIONS=32] [ROUNDS=3]
#        PGO=0 bench/run.sh ...               (a plain `cargo build --release`)
#        AUTHGATE_BIN=path bench/run.sh ...   (another build)
#        ONLY="1 6" bench/run.sh ...          (some measurements only)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5}
connections=${2:-32}
rounds=${3:-3}
only=${ONLY:-1 2 3 4 5 6}
wants() { [[ " $only " == *" $1 "* ]]; }

. bench/common.sh
need nginx nginx-light
need wrk wrk
need h2load nghttp2-client
need openssl openssl
need curl curl
need taskset util-linux
if [ -n "${AUTHGATE_BIN:-}" ]; then built="as named"
elif [ "${PGO:-1}" = 1 ]; then built="profile-guided, bench/pgo.sh"
else built="plain cargo build --release"; fi
PGO=${PGO:-1} build_authgate
echo "authgate: $AUTHGATE_BIN ($built)"

cpus=$(nproc)
[ "$cpus" -ge 2 ] || { echo "bench/run.sh needs 2 CPUs: one for the proxy, one for the load" >&2; exit 1; }
proxy_cpu=$((cpus - 1))
load_cpus=$(if [ "$cpus" -eq 2 ]; then echo 0; else echo "0-$((cpus - 2))"; fi)
on_load() { taskset -c "$load_cpus" "$@"; }
# start CPUS COMMAND...: in the background, its pid in $pids and $started.
start() {
  local where=$1; shift
  taskset -c "$where" "$@" & started=$!
  pids+=("$started")
}

bench_start
up=$(free_port); up_tls=$(free_port); nginx_proxy=$(free_port); nginx_auth=$(free_port)
gateway=$(free_port); shipped=$(free_port)
tls="ssl_certificate $work/bench.crt; ssl_certificate_key $work/bench.key;
  ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000; keepalive_timeout 75s;"
proxy_to_app="proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";
  proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr;
  proxy_set_header X-Forwarded-Proto https;"

upstream_conf "$up" "listen 127.0.0.1:$up_tls ssl;
    $tls
    location = /_session_check {
      if (\$cookie_session = \"valid-bench-session\") { return 204; }
      return 401;
    }"

# nginx as the proxy: one worker on the proxy CPU, a kept-alive upstream
# pool, an access log like authgate's.
cat > "$work/proxy.conf" <<CONF
$(nginx_head proxy)
worker_processes 1;
http {
  $(nginx_temp_paths)
  access_log $work/proxy-access.log;
  upstream app { server 127.0.0.1:$up; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_proxy ssl http2;
    $tls
    location / { $proxy_to_app }
  }
  server {
    listen 127.0.0.1:$nginx_auth ssl http2;
    $tls
    location / { auth_request /_auth; $proxy_to_app }
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

# The gateway: defaults (local store, access log on) except the sign-in
# throttle, raised to its maximum so that the flood of (5) reaches the
# hashing queue instead of stopping at 429.
cat > "$work/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$gateway"
cert = "bench.crt"
key = "bench.key"
[upstream]
url = "http://127.0.0.1:$up"
[users]
file = "users.toml"
[login]
max_failures = 1000
[[rule]]
path = "/public/**"
access = "public"
[[rule]]
path = "/**"
access = "authenticated"
CONF

start "$load_cpus" nginx -c "$work/upstream.conf"
start "$proxy_cpu" nginx -c "$work/proxy.conf"
start "$proxy_cpu" "$AUTHGATE_BIN" run -c "$work/gateway.toml" 2> "$work/authgate.log"
gateway_pid=$started
for port in $up $up_tls $nginx_proxy $nginx_auth $gateway; do wait_port "$port"; done
nginx_pid=$(pgrep -P "$(cat "$work/proxy.pid")")
session=$(sign_in "$gateway")

declare -A url pid_of cookie
url[a]="https://127.0.0.1:$up_tls/"; pid_of[a]=""
url[b]="https://127.0.0.1:$nginx_proxy/"; pid_of[b]=$nginx_pid
url[c]="https://127.0.0.1:$gateway/public/"; pid_of[c]=$gateway_pid
url[d]="https://127.0.0.1:$gateway/app/"; pid_of[d]=$gateway_pid; cookie[d]="__Host-authgate=$session"
url[e]="https://127.0.0.1:$nginx_auth/app/"; pid_of[e]=$nginx_pid; cookie[e]="session=valid-bench-session"
headers() { [ -n "${cookie[$1]:-}" ] && printf '%s\n' -H "Cookie: ${cookie[$1]}"; return 0; }

# rotate ROUND TARGETS...: the targets in this round's order.
rotate() {
  local round=$1; shift
  local list=("$@") n=$# i
  for ((i = 0; i < n; i++)); do printf '%s ' "${list[$(((i + round) % n))]}"; done
}

declare -A rps p99 cpu
# wrk_run KEY TARGET EXTRA_HEADER...: one wrk run; records rps, p99 (ms), CPU µs/request.
wrk_run() {
  local key=$1 t=$2; shift 2
  local args=() out before after requests h
  mapfile -t args < <(headers "$t")
  for h in "$@"; do args+=(-H "$h"); done
  on_load wrk -t1 -c"$connections" -d1s "${args[@]}" "${url[$t]}" >/dev/null  # warm-up
  before=$(ticks ${pid_of[$t]})
  out=$(on_load wrk -t1 -c"$connections" -d"${duration}s" --latency "${args[@]}" "${url[$t]}")
  after=$(ticks ${pid_of[$t]})
  if grep -q "Non-2xx" <<<"$out"; then echo "$t: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps[$key]+="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") "
  p99[$key]+="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")") "
  [ -n "${pid_of[$t]}" ] && cpu[$key]+="$(us_per_request $((after - before)) "$requests") "
  return 0
}

# h2load_run KEY TARGET ARGS...: one h2load run; records rps and CPU µs/request.
h2load_run() {
  local key=$1 t=$2; shift 2
  local out before after requests args
  mapfile -t args < <(headers "$t")
  before=$(ticks ${pid_of[$t]})
  out=$(on_load h2load "${args[@]}" "$@" "${url[$t]}")
  after=$(ticks ${pid_of[$t]})
  requests=$(awk '/^requests:/ {print $8}' <<<"$out")
  if ! grep -q "^status codes: $requests 2xx" <<<"$out" || [ "$requests" = 0 ]; then
    echo "$t: not every answer was 2xx:" >&2; echo "$out" >&2; exit 1
  fi
  rps[$key]+="$(awk '/^finished in/ {print $4}' <<<"$out") "
  cpu[$key]+="$(us_per_request $((after - before)) "$requests") "
}

# p99 of h2load's per-request log (microseconds in the third column), in ms.
log_p99() {
  awk -F'\t' '$2 < 200 || $2 > 299 { bad++ } { print $3 } END { if (bad) print "non-2xx answers" > "/dev/stderr" }' "$1" |
    sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", v[int(NR * 0.99)] / 1000 }'
}
# paced KEY TARGET RATE: HTTP/1.1 keep-alive at RATE requests/s in all; records p99 (ms).
paced() {
  local key=$1 t=$2 rate=$3 per_client args
  mapfile -t args < <(headers "$t")
  per_client=$(awk -v r="$rate" -v c="$connections" 'BEGIN { printf "%d", r / c }')
  on_load h2load --h1 "${args[@]}" -c "$connections" --rps="$per_client" -D "$duration" \
    --warm-up-time=1 --log-file="$work/paced.log" "${url[$t]}" >/dev/null
  p99[$key]+="$(log_p99 "$work/paced.log") "
}

# The median of a list, or "-" for none.
median_or_dash() { if [ -n "${1// /}" ]; then median <<<"$1"; else echo -; fi; }
row() { # label key -> one line: medians and the rounds
  printf '%-28s %10s req/s   p99 %8s ms   CPU %6s us/req   (rounds: %s)\n' "$1" \
    "$(median_or_dash "${rps[$2]:-}")" "$(median_or_dash "${p99[$2]:-}")" \
    "$(median_or_dash "${cpu[$2]:-}")" "${rps[$2]:-}${p99[$2]:+| p99 ${p99[$2]}}"
}
m() { median <<<"${!1}"; }
verdict() { # text value op bound
  local ok; ok=$(awk -v v="$2" -v b="$4" -v op="$3" 'BEGIN { print (op == ">=" ? v >= b : v <= b) ? "holds" : "FAILS" }')
  printf '  %-62s %8s %s %-6s %s\n' "$1" "$2" "$3" "$4" "$ok"
}
summary=()

echo "proxy on CPU $proxy_cpu, load and upstream on CPU $load_cpus; ${duration}s runs, $connections connections, $rounds rounds"
echo "authgate: $("$AUTHGATE_BIN" --version 2>/dev/null || echo "$AUTHGATE_BIN")"

if wants 1; then
  echo
  echo "1. HTTP/1.1 keep-alive (wrk, 1 thread)"
  echo 0 > "$work/rss-peak"
  for round in $(seq "$rounds"); do
    for t in $(rotate "$round" a b c d e); do
      if [ "$t" = d ]; then
        ( while kill -0 "$gateway_pid" 2>/dev/null; do
            awk '$1 == "VmRSS:" { print $2 }' "/proc/$gateway_pid/status"; sleep 0.25
          done ) > "$work/rss-samples" &
        sampler=$!
        wrk_run "$t" "$t"
        kill "$sampler"; wait "$sampler" 2>/dev/null || true
        rss_peak=$(sort -n "$work/rss-samples" "$work/rss-peak" | tail -1)
        echo "$rss_peak" > "$work/rss-peak"
      else
        wrk_run "$t" "$t"
      fi
    done
  done
  row "a: upstream direct (HTTPS)" a
  row "b: nginx proxy" b
  row "c: authgate public route" c
  row "d: authgate session route" d
  row "e: nginx auth_request" e
  d_over_b=""
  for round in $(seq "$rounds"); do
    d_over_b+="$(ratio "$(cut -d' ' -f"$round" <<<"${rps[d]}")" "$(cut -d' ' -f"$round" <<<"${rps[b]}")") "
  done
  summary+=("$(verdict "1. d/b keep-alive requests/s (median of per-round ratios)" "$(median <<<"$d_over_b")" ">=" 1.0)")
  summary+=("$(verdict "   d/e keep-alive requests/s" "$(ratio "$(m 'rps[d]')" "$(m 'rps[e]')")" ">=" 1.0)")
  summary+=("$(verdict "   d/b proxy CPU per request" "$(ratio "$(m 'cpu[d]')" "$(m 'cpu[b]')")" "<=" 1.0)")

  half=$(awk -v r="$(m 'rps[b]')" 'BEGIN { printf "%d", r / 2 }')
  echo
  echo "1. p99 at half of nginx's peak: $half requests/s (h2load --h1, $connections connections)"
  for round in $(seq "$rounds"); do
    for t in $(rotate "$round" b d); do paced "paced-$t" "$t" "$half"; done
  done
  row "b: nginx proxy" paced-b
  row "d: authgate session route" paced-d
  summary+=("$(verdict "1. p99 at half nginx's peak, d/b" "$(ratio "$(m 'p99[paced-d]')" "$(m 'p99[paced-b]')")" "<=" 1.0)")
fi

if wants 2; then
  echo
  echo "2. HTTP/2 (h2load -c $connections -m 10)"
  for round in $(seq "$rounds"); do
    for t in $(rotate "$round" b d e); do
      h2load_run "h2-$t" "$t" -c "$connections" -m 10 -D "$duration" --warm-up-time=1
    done
  done
  row "b: nginx proxy" h2-b
  row "d: authgate session route" h2-d
  row "e: nginx auth_request" h2-e
  summary+=("$(verdict "2. d/b HTTP/2 requests/s" "$(ratio "$(m 'rps[h2-d]')" "$(m 'rps[h2-b]')")" ">=" 1.0)")
fi

if wants 3; then
  echo
  echo "3. new TLS connections, one request each (wrk, Connection: close)"
  for round in $(seq "$rounds"); do
    for t in $(rotate "$round" b d); do wrk_run "new-$t" "$t" "Connection: close"; done
  done
  row "b: nginx proxy" new-b
  row "d: authgate session route" new-d
  summary+=("$(verdict "3. d/b new connections per second" "$(ratio "$(m 'rps[new-d]')" "$(m 'rps[new-b]')")" ">=" 0.9)")
fi

if wants 4; then
  echo
  echo "4. memory"
  # The shipped config as it is, but for its listener, certificate and state.
  mkdir -p "$work/shipped"
  cp gateway.toml "$work/users.toml" "$work/bench.crt" "$work/bench.key" "$work/shipped/"
  sed -i -e "s#^listen = .*#listen = \"127.0.0.1:$shipped\"#" \
    -e 's#^cert = .*#cert = "bench.crt"#' -e 's#^key = .*#key = "bench.key"#' "$work/shipped/gateway.toml"
  start "$proxy_cpu" "$AUTHGATE_BIN" run -c "$work/shipped/gateway.toml" 2> "$work/shipped.log"
  shipped_pid=$started
  wait_port "$shipped"
  sleep 2
  idle_kib=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$shipped_pid/status")
  kill "$shipped_pid"
  idle_mib=$(awk -v k="$idle_kib" 'BEGIN { printf "%.1f", k / 1024 }')
  echo "idle RSS, shipped gateway.toml: $idle_mib MiB"
  summary+=("$(verdict "4. idle RSS of authgate run, shipped config (MiB)" "$idle_mib" "<=" 15)")
  if [ -s "$work/rss-peak" ]; then
    peak_mib=$(awk '{ printf "%.1f", $1 / 1024 }' "$work/rss-peak")
    echo "peak RSS of (d) during its keep-alive runs: $peak_mib MiB"
    summary+=("$(verdict "4. RSS under keep-alive load, peak of samples (MiB)" "$peak_mib" "<=" 40)")
  fi
fi

if wants 5; then
  echo
  # As many wrong-password sign-ins at once as the hashing queue takes:
  # its threads (one per two CPUs the gateway may use) and 64 waiting.
  flood_connections=65
  rate=${half:-10000}
  echo "5. p99 of (d) at $rate requests/s, without and with a sign-in flood ($flood_connections connections of wrong passwords)"
  jar="$work/cookies-flood"
  curl -sk -c "$jar" -o /dev/null "${url[d]%/app/}/.gateway/login"
  csrf=$(awk '$6 == "__Host-authgate-login" {print $7}' "$jar")
  cat > "$work/flood.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "__Host-authgate-login=$csrf"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, "csrf=$csrf&username=nobody" .. (n % 997) .. "&password=wrong" .. n)
end
LUA
  attempts=""
  for round in $(seq "$rounds"); do
    paced "calm" d "$rate"
    on_load wrk -t1 -c"$flood_connections" -d"$((duration + 3))s" -s "$work/flood.lua" \
      "${url[d]%/app/}/.gateway/login" > "$work/flood.out" &
    flood=$!
    sleep 1
    paced "flood" d "$rate"
    wait "$flood"
    attempts+="$(awk '/^Requests\/sec/ {print $2}' "$work/flood.out") "
  done
  row "d without a flood" calm
  row "d under the flood" flood
  echo "flood: $(median <<<"$attempts") answered sign-ins/s (rounds: $attempts)"
  summary+=("$(verdict "5. p99 under the sign-in flood / without" "$(ratio "$(m 'p99[flood]')" "$(m 'p99[calm]')")" "<=" 2.0)")
fi

if wants 6; then
  echo
  echo "6. side by side on CPU $proxy_cpu: (b) and (d) under load at once, CPU per request of each"
  # load TARGET SECONDS MODE -> requests answered
  side_load() {
    local args
    mapfile -t args < <(headers "$1")
    if [ "$3" = h1 ]; then
      on_load wrk -t1 -c"$connections" -d"$2s" "${args[@]}" "${url[$1]}" | awk '/requests in/ {print $1}'
    else
      on_load h2load "${args[@]}" -c "$connections" -m 10 -D "$2" "${url[$1]}" | awk '/^requests:/ {print $8}'
    fi
  }
  for mode in h1 h2; do
    side=""
    for round in $(seq "$rounds"); do
      b0=$(ticks "$nginx_pid"); d0=$(ticks "$gateway_pid")
      side_load b "$duration" "$mode" > "$work/side-b" & lb=$!
      side_load d "$duration" "$mode" > "$work/side-d" & ld=$!
      wait "$lb" "$ld"
      b1=$(ticks "$nginx_pid"); d1=$(ticks "$gateway_pid")
      cb=$(us_per_request $((b1 - b0)) "$(cat "$work/side-b")")
      cd=$(us_per_request $((d1 - d0)) "$(cat "$work/side-d")")
      side+="$(ratio "$cd" "$cb") "
      echo "  $mode round $round: nginx $cb us/req ($(cat "$work/side-b") requests), authgate $cd us/req ($(cat "$work/side-d") requests)"
    done
    summary+=("$(verdict "6. side by side, $mode: d/b CPU per request" "$(median <<<"$side")" "<=" 1.0)")
  done
fi

echo
echo "summary (medians of $rounds rounds):"
printf '%s\n' "${summary[@]}"
sleep 0.2  # the gateway's log flushes every 50 ms
echo "(authgate logged $(grep -c 'authgate::access' "$work/authgate.log" || true) request lines, nginx $(wc -l < "$work/proxy-access.log") access lines)"
