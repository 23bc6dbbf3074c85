#!/usr/bin/env bash
# The session stores compared on the authenticated route, in one run on
# this machine: three gateways on the same upstream, alike but for
# [store] backend:
#   (d) "local" (the default state file),
#   (f) "memory",
#   (g) "redis" (a redis-server started here), with the Redis calls per
#       request read from its /metrics;
# four rounds of (d), (f) and (g) with the order rotated every round (the
# later of back-to-back runs tends to do better), the median of the
# ratios; then sign-in latency (p50 of sequential sign-ins, argon2
# included) on (d) and (f), alternating. Loopback only; it stops by
# itself. Not a test: CI does not run it. authgate against nginx is
# bench/run.sh; the store itself has `cargo bench --bench session_store`.
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
need curl curl
need redis-server redis-server
build_authgate
bench_start

up=$(free_port); redis_port=$(free_port); redis_ops=$(free_port)
declare -A port pid_of session
for store in local memory redis; do port[$store]=$(free_port); done

upstream_conf "$up"

for store in local memory redis; do
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\ncert = "bench.crt"\nkey = "bench.key"\n' "${port[$store]}"
    [ "$store" = redis ] && printf 'ops_listen = "127.0.0.1:%s"\n' "$redis_ops"
    printf '[upstream]\nurl = "http://127.0.0.1:%s"\n[users]\nfile = "users.toml"\n' "$up"
    printf '[[rule]]\npath = "/**"\naccess = "authenticated"\n'
    case $store in
      memory) printf '[store]\nbackend = "memory"\n' ;;
      redis) printf '[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' "$redis_port" ;;
    esac
  } > "$work/gateway-$store.toml"
done

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --maxmemory-policy noeviction --dir "$work" >/dev/null & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
nginx -c "$work/upstream.conf" & pids+=($!)
for store in local memory redis; do
  "$AUTHGATE_BIN" run -c "$work/gateway-$store.toml" 2> "$work/authgate-$store.log" & pids+=($!)
  pid_of[$store]=$!
done
for p in $up "${port[@]}"; do wait_port "$p"; done
for store in local memory redis; do session[$store]=$(sign_in "${port[$store]}"); done
round_trips() { curl -s "http://127.0.0.1:$redis_ops/metrics" | awk '$1 == "authgate_store_round_trips_total" {print $2}'; }

declare -A rps
measure() { # store round -> prints a line; sets rps[store-round] and last_requests
  local store=$1 round=$2 out before after
  local args=(-H "Cookie: __Host-authgate=${session[$store]}")
  local url="https://127.0.0.1:${port[$store]}/app/"
  wrk -t2 -c"$connections" -d2s "${args[@]}" "$url" >/dev/null  # warm-up
  before=$(ticks "${pid_of[$store]}")
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "${args[@]}" "$url")
  after=$(ticks "${pid_of[$store]}")
  if grep -q "Non-2xx" <<<"$out"; then echo "$store: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  last_requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps[$store-$round]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  printf '%-7s round %s %10s req/s   p50 %9s   p99 %9s   CPU %6s us/req\n' "$store" "$round" \
    "${rps[$store-$round]}" "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")" "$(us_per_request $((after - before)) "$last_requests")"
}

echo "wrk: 2 threads, $connections keep-alive connections, ${duration}s per run, the authenticated route"
store_ratios=""; redis_ratios=""; trips_before=$(round_trips); redis_requests=0
for round in 1 2 3 4; do
  case $round in 1) order=(local memory redis);; 2) order=(redis local memory);;
    3) order=(memory redis local);; 4) order=(local redis memory);; esac
  for store in "${order[@]}"; do
    measure "$store" "$round"
    [ "$store" = redis ] && redis_requests=$((redis_requests + last_requests))
  done
  store_ratios+="$(ratio "${rps[local-$round]}" "${rps[memory-$round]}") "
  redis_ratios+="$(ratio "${rps[redis-$round]}" "${rps[local-$round]}") "
done
echo "g/d (redis / local) per round: $redis_ratios; median $(median <<<"$redis_ratios")"
trips=$(($(round_trips) - trips_before))
echo "Redis calls per request on (g), warm-up included: $(awk -v t="$trips" -v n="$redis_requests" 'BEGIN { printf "%.5f (%d calls, %d requests measured)", t / n, t, n }')"
echo "d/f (local / memory) per round: $store_ratios; median $(median <<<"$store_ratios")"

# Sign-in latency: sequential sign-ins, alternating between the two
# gateways so that both see the same machine.
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
  signin_ms "${port[local]}" >> "$work/signin-local"
  signin_ms "${port[memory]}" >> "$work/signin-memory"
done
local_p50=$(median < "$work/signin-local"); memory_p50=$(median < "$work/signin-memory")
echo "sign-in p50: local store ${local_p50} ms, memory store ${memory_p50} ms, difference $(awk -v a="$local_p50" -v b="$memory_p50" 'BEGIN { printf "%.2f", a - b }') ms (40 each)"
