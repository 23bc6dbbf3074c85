#!/usr/bin/env bash
# What signed identity assertions and forward-auth cost (issue 15), in one
# run on this machine, alternating rounds:
#   (plain)  an authenticated proxied request, assertions off
#   (signed) the same on a gateway with [identity] assertion = true (the
#            session's assertion is made once, then reused)
#   (verify) GET /.gateway/verify on the plain verify_listen, as an edge
#            proxy's auth_request makes it (forwarded headers + the cookie)
# For each: requests/s (median of the rounds) and the gateway's CPU time
# per request (user + system, from /proc), so that the cost of an
# assertion is the difference signed - plain. Loopback only; stops by
# itself. Not a test: CI does not run it.
#
# Usage: bench/forward_auth.sh [SECONDS_PER_ROUND=5] [CONNECTIONS=32] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5}; connections=${2:-32}; rounds=${3:-3}

. bench/common.sh
need nginx nginx-light
need wrk wrk
need openssl openssl
if [ -z "${AUTHGATE_BIN:-}" ]; then
  cargo build --release --quiet
  AUTHGATE_BIN=target/release/authgate
fi

work=$(mktemp -d); pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.2; rm -rf "$work"
}
trap cleanup EXIT
up=$(free_port); plain=$(free_port); signed=$(free_port); verify=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/bench.key" -out "$work/bench.crt" -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
mkdir -p "$work/tmp"
cat > "$work/upstream.conf" <<CONF
pid $work/upstream.pid; error_log $work/upstream.err warn; daemon off;
worker_processes 1;
events { worker_connections 4096; }
http {
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { default_type text/plain; return 200 "hello\n"; } }
}
CONF
password="bench-password-$RANDOM$RANDOM"
printf '[users.bench]\npassword = "%s"\nroles = ["user"]\n' \
  "$(printf '%s\n' "$password" | "$AUTHGATE_BIN" hash-password)" > "$work/users.toml"
gateway_config() { # port extra
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
cert = "bench.crt"
key = "bench.key"
trusted_proxies = ["127.0.0.1"]
$2
[upstream]
url = "http://127.0.0.1:$up"
[store]
backend = "memory"
[users]
file = "users.toml"
[[rule]]
path = "/**"
access = "authenticated"
CONF
}
gateway_config "$plain" "" > "$work/plain.toml"
gateway_config "$signed" "verify_listen = \"127.0.0.1:$verify\"" > "$work/signed.toml"
printf '[identity]\nassertion = true\n' >> "$work/signed.toml"

nginx -c "$work/upstream.conf" & pids+=($!)
"$AUTHGATE_BIN" run -c "$work/plain.toml" 2>/dev/null & pids+=($!); plain_pid=$!
"$AUTHGATE_BIN" run -c "$work/signed.toml" 2>/dev/null & pids+=($!); signed_pid=$!
for port in $up $plain $signed $verify; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

sign_in() { # port -> session cookie value
  local jar="$work/jar-$1" csrf
  curl -sk -c "$jar" -o /dev/null "https://127.0.0.1:$1/.gateway/login"
  csrf=$(awk '$6 == "__Host-authgate-login" {print $7}' "$jar")
  curl -sk -b "$jar" -D - -o /dev/null --data-urlencode "csrf=$csrf" \
    --data-urlencode "username=bench" --data-urlencode "password=$password" \
    "https://127.0.0.1:$1/.gateway/login" | tr -d '\r' |
    sed -n 's/^set-cookie: __Host-authgate=\([^;]*\).*/\1/ip'
}
plain_session=$(sign_in "$plain"); signed_session=$(sign_in "$signed")
[ -n "$plain_session" ] && [ -n "$signed_session" ] || { echo "could not sign in" >&2; exit 1; }

ticks() { local f; read -r -a f < "/proc/$1/stat"; echo $((f[13] + f[14])); }
declare -A rps_list us_list
measure() { # name pid url headers...
  local name=$1 pid=$2 url=$3; shift 3
  local args=() h; for h in "$@"; do args+=(-H "$h"); done
  wrk -t2 -c"$connections" -d1s "${args[@]}" "$url" >/dev/null
  local before after out requests
  before=$(ticks "$pid")
  out=$(wrk -t2 -c"$connections" -d"${duration}s" "${args[@]}" "$url")
  after=$(ticks "$pid")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps_list[$name]+="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") "
  us_list[$name]+="$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}') "
}
for round in $(seq "$rounds"); do
  echo "round $round/$rounds ..." >&2
  measure plain "$plain_pid" "https://127.0.0.1:$plain/x" "Cookie: __Host-authgate=$plain_session"
  measure signed "$signed_pid" "https://127.0.0.1:$signed/x" "Cookie: __Host-authgate=$signed_session"
  measure verify "$signed_pid" "http://127.0.0.1:$verify/.gateway/verify" \
    "Cookie: __Host-authgate=$signed_session" "X-Forwarded-Method: GET" \
    "X-Forwarded-Host: app.example" "X-Forwarded-Uri: /x"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-8s %12s %16s   (rounds: req/s | CPU µs per request)\n' target "req/s" "CPU µs/request"
for name in plain signed verify; do
  printf '%-8s %12s %16s   (%s| %s)\n' "$name" "$(median <<<"${rps_list[$name]}")" \
    "$(median <<<"${us_list[$name]}")" "${rps_list[$name]}" "${us_list[$name]}"
done
p=$(median <<<"${us_list[plain]}"); s=$(median <<<"${us_list[signed]}")
awk -v p="$p" -v s="$s" 'BEGIN {printf "assertion (cached), CPU per request: %+.2f µs (signed - plain), ratio %.3f\n", s - p, s / p}'
