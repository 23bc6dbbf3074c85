#!/usr/bin/env bash
# The soak (benches/soak.rs): the release gateway on the local store and on
# Redis at once, under keep-alive and new-connection clients over HTTP/1.1
# and HTTP/2, WebSockets, sign-ins, sign-outs and a reload every minute,
# for MINUTES minutes. Prints RSS, open descriptors, tasks, requests and
# p99 each minute; exits non-zero if any request failed, a reload went
# unseen, or RSS or descriptors grew over 10 % past minute 2's. Loopback
# only; it stops by itself. README "Soak" has the 30-minute figures.
#
# Usage: bench/soak.sh [MINUTES=30]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
. bench/common.sh
need redis-server redis-server
ulimit -n 65536 2>/dev/null || true
cargo bench --locked --bench soak -- "$minutes"
