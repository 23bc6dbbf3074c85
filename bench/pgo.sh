#!/usr/bin/env bash
# A release build of authgate optimized with a profile of its own work
# (profile-guided optimization), the build the Dockerfile ships:
#
#   bench/pgo.sh [OUT=target/pgo/authgate]
#
# 1. builds an instrumented binary (-Cprofile-generate, a target folder of
#    its own), 2. trains it: `authgate init`'s shipped config (local store)
#    in front of the demo app, a sign-in, then HTTP/1.1 keep-alive, HTTP/2
#    multiplexed, anonymous and new-connection requests with curl, all on
#    loopback, 3. merges the profile with the toolchain's llvm-profdata
#    (`rustup component add llvm-tools` when it is missing), 4. builds
#    again with -Cprofile-use and copies the binary to OUT.
#
# Measured with bench/run.sh's side-by-side method (two builds on one CPU
# at once, the bench's own config and upstream, not the training's): 0.86x
# the CPU per keep-alive HTTP/1.1 request of the plain `cargo build
# --release` of the same tree, 0.84x per HTTP/2 request. The gain is the
# instruction cache and branch layout (callgrind's cache simulation:
# about 30 % fewer L1 instruction misses per request). Needs curl and python3
# (installed when missing) and about ten minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
out=${1:-target/pgo/authgate}
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools
fi
need curl curl
need python3 python3

work=$(mktemp -d)
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# --target: the flags then reach the gateway's own code and libraries,
# not build scripts (whose profiles would be merged in too).
echo "building the instrumented binary ..." >&2
RUSTFLAGS="-Cprofile-generate=$work/profile" CARGO_TARGET_DIR=target/pgo-generate \
  cargo build --release --locked --quiet --target "$host"
trainee=target/pgo-generate/$host/release/authgate

echo "training it ..." >&2
# The upstream: the demo's app (its profile is thrown away).
: > "$work/demo.out"
LLVM_PROFILE_FILE="$work/discard/%p.profraw" "$trainee" demo --listen "127.0.0.1:$(free_port)" \
  > "$work/demo.out" 2>/dev/null & pids+=($!)
app=""
for _ in $(seq 100); do
  app=$(sed -n 's|.*demo app behind it: \(http://[^/ ]*\)/.*|\1|p' "$work/demo.out")
  [ -n "$app" ] && break
  sleep 0.1
done
[ -n "$app" ] || { echo "the demo app did not start" >&2; exit 1; }
bench_password="train-password-$RANDOM$RANDOM"
printf '%s\n' "$bench_password" |
  "$trainee" init "$work/site" --upstream "$app" --host 127.0.0.1 --admin bench > /dev/null
port=$(free_port)
sed -i "s|^listen = \"0.0.0.0:8443\"|listen = \"127.0.0.1:$port\"|" "$work/site/gateway.toml"
grep -q "^listen = \"127.0.0.1:$port\"" "$work/site/gateway.toml"
LLVM_PROFILE_FILE="$work/profile/gateway-%p.profraw" "$trainee" run -c "$work/site/gateway.toml" \
  2> "$work/gateway.log" & gateway=$!
pids+=($gateway)
wait_port "$port"
base="https://127.0.0.1:$port"
session=$(sign_in "$port")
cookie="Cookie: __Host-authgate=$session"
# Each curl below makes its requests on one connection (or, with -Z over
# HTTP/2, several streams at once on one).
curl -sk --http1.1 -H "$cookie" "$base/app/[1-20000]" > /dev/null
curl -sk --no-progress-meter --http2 -Z --parallel-max 10 -H "$cookie" "$base/app/[1-20000]" > /dev/null
curl -sk --http1.1 "$base/app/[1-2000]" > /dev/null
curl -sk --http1.1 -H "$cookie" -H "Connection: close" "$base/app/[1-300]" > /dev/null
for _ in 1 2 3; do sign_in "$port" > /dev/null; done
kill -TERM "$gateway"
wait "$gateway"
ls "$work"/profile/gateway-*.profraw > /dev/null

# Kept where the next run puts it again, so an unchanged tree is not built
# again from scratch (rustc tracks the profile's contents).
mkdir -p target/pgo
"$profdata" merge -o "$PWD/target/pgo/authgate.profdata" "$work"/profile/gateway-*.profraw
echo "building with the profile ..." >&2
RUSTFLAGS="-Cprofile-use=$PWD/target/pgo/authgate.profdata" CARGO_TARGET_DIR=target/pgo \
  cargo build --release --locked --quiet --target "$host"
mkdir -p "$(dirname "$out")"
cp "target/pgo/$host/release/authgate" "$out"
echo "$out"
