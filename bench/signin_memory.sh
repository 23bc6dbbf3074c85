#!/usr/bin/env bash
# Memory of a sign-in burst (issue 8): RSS of `authgate run` idle, at the
# peak of 200 concurrent sign-ins (wrong passwords, so every one that gets
# a place in the hashing queue costs a full argon2id verification), and a
# few seconds after. Target: peak under 64 MiB, and back within 10 % of
# the idle figure afterwards.
#
# Two idle figures: fresh from start, and after the same 200 connections
# have each fetched the sign-in page (no hashing). The second is the fair
# baseline for the hashing cost: glibc keeps a few MiB of the connections'
# own freed buffers in its arenas whatever they did.
#
# Loopback only; it stops by itself. Not a test: CI does not run it.
#
# Usage: bench/signin_memory.sh [CONCURRENT=200] [ROUNDS=3]
# AUTHGATE_BIN=path measures another build (e.g. an older commit's).
set -euo pipefail
cd "$(dirname "$0")/.."

concurrent=${1:-200}
rounds=${2:-3}
if [ -z "${AUTHGATE_BIN:-}" ]; then
  cargo build --release --quiet
  AUTHGATE_BIN=target/release/authgate
fi
command -v openssl >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null; }

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/gw.key" -out "$work/gw.crt" -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
hash=$(printf 'the right password\n' | "$AUTHGATE_BIN" hash-password)
printf '[users.alice]\npassword = "%s"\nroles = ["user"]\n' "$hash" > "$work/users.toml"
cat > "$work/gateway.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
cert = "gw.crt"
key = "gw.key"

[upstream]
url = "http://127.0.0.1:9"

[users]
file = "users.toml"

[login]
max_failures = 1000

[[rule]]
path = "/**"
access = "authenticated"
CONF

AUTHGATE_LOG=warn "$AUTHGATE_BIN" run -c "$work/gateway.toml" 2>"$work/log" &
pid=$!
rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
sleep 2
idle=$(rss VmRSS)

burst() {
  python3 - "$port" "$concurrent" "$1" <<'PY'
import http.client, ssl, sys, threading, collections
port, n, sign_in = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "sign-in"
ctx = ssl._create_unverified_context()
def connect():
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
c = connect(); c.request("GET", "/.gateway/login"); r = c.getresponse(); r.read()
token = [v.split("=", 1)[1].split(";")[0] for k, v in r.getheaders()
         if k.lower() == "set-cookie" and v.startswith("__Host-authgate-login=")][0]
statuses = collections.Counter()
lock = threading.Lock()
barrier = threading.Barrier(n)
def one(i):
    conn = connect(); conn.connect()
    body = f"csrf={token}&username=user{i}&password=wrong-{i}"
    barrier.wait()
    if sign_in:
        conn.request("POST", "/.gateway/login", body, {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"__Host-authgate-login={token}"})
    else:
        conn.request("GET", "/.gateway/login")
    status = conn.getresponse().status
    with lock: statuses[status] += 1
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(f"{k}x{v}" for k, v in sorted(statuses.items())))
PY
}

echo "authgate: $AUTHGATE_BIN"
echo "idle RSS: $((idle / 1024)) MiB fresh"
answers=$(burst page)
sleep 4
warm=$(rss VmRSS)
echo "idle RSS: $((warm / 1024)) MiB after $concurrent connections fetched the sign-in page ($answers)"
for round in $(seq "$rounds"); do
  answers=$(burst sign-in)
  peak=$(rss VmHWM)
  sleep 4
  after=$(rss VmRSS)
  echo "round $round: $concurrent sign-ins at once ($answers): peak RSS $((peak / 1024)) MiB," \
    "4 s later $((after / 1024)) MiB = $(python3 -c "print(f'{$after/$idle:.2f} x fresh idle, {$after/$warm:.2f} x idle after connections')")"
done
