#!/usr/bin/env bash
# Memory under a flood of forward-auth calls that each name another host
# (issue 24, point 5.2): in forward-auth mode the assertion's audience is
# the host the client names, so one session asking for N hosts must not
# grow the gateway by N assertions. Signs in once, reads the gateway's RSS,
# sends REQUESTS verify calls with distinct X-Forwarded-Host values over
# keep-alive (wrk with a counter in Lua), reads RSS again and fails when it
# grew by 5 MiB or more. Loopback only; stops by itself. Not run by CI.
#
# Usage: bench/assertion_flood.sh [REQUESTS=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100000}

. bench/common.sh
need wrk wrk
need openssl openssl
build_authgate
bench_start
gw=$(free_port); verify=$(free_port)
cat > "$work/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$gw"
cert = "bench.crt"
key = "bench.key"
trusted_proxies = ["127.0.0.1"]
verify_listen = "127.0.0.1:$verify"
forward_auth = "traefik"
[upstream]
url = "http://127.0.0.1:1"
[store]
backend = "memory"
[users]
file = "users.toml"
[identity]
assertion = true
[[rule]]
path = "/**"
access = "authenticated"
CONF
"$AUTHGATE_BIN" run -c "$work/gateway.toml" 2>/dev/null & pids+=($!); gw_pid=$!
wait_port "$gw"; wait_port "$verify"
session=$(sign_in "$gw")
cat > "$work/hosts.lua" <<LUA
local n = 0
init = function(args) n = tonumber(args[1]) end
request = function()
  n = n + 1
  return wrk.format("GET", "/.gateway/verify", {
    ["Cookie"] = "__Host-authgate=$session",
    ["X-Forwarded-Method"] = "GET",
    ["X-Forwarded-Uri"] = "/x",
    ["X-Forwarded-Host"] = "host" .. n .. ".example",
  })
end
LUA
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Warm up the allocator and the connection paths on one host first.
wrk -t1 -c4 -d1s -H "Cookie: __Host-authgate=$session" -H "X-Forwarded-Method: GET" \
  -H "X-Forwarded-Uri: /x" -H "X-Forwarded-Host: app.example" \
  "http://127.0.0.1:$verify/.gateway/verify" > /dev/null
before=$(rss_kib "$gw_pid")
sent=0
while [ "$sent" -lt "$requests" ]; do
  # Each run starts counting where the last stopped: every host is new.
  out=$(wrk -t1 -c4 -d2s -s "$work/hosts.lua" "http://127.0.0.1:$verify/.gateway/verify" -- "$((sent * 2))")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
  sent=$((sent + $(awk '/requests in/ {print $1}' <<<"$out")))
done
after=$(rss_kib "$gw_pid")
grew=$((after - before))
echo "verify calls with distinct hosts: $sent; RSS $before KiB -> $after KiB (grew $grew KiB)"
[ "$grew" -lt 5120 ] || { echo "RSS grew 5 MiB or more" >&2; exit 1; }
