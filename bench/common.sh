# Helpers the bench scripts share; sourced, not run. Loopback only.

# need COMMAND PACKAGE: installs the Debian package when the command is missing.
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2 ..." >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  fi
}

# A loopback port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets AUTHGATE_BIN: a release build of this tree unless one was named
# (AUTHGATE_BIN=path measures another build, an older commit's say). With
# PGO=1 the profile-guided build the Dockerfile ships (bench/pgo.sh, two
# builds and a training run), else a plain `cargo build --release`.
build_authgate() {
  if [ -z "${AUTHGATE_BIN:-}" ]; then
    if [ "${PGO:-0}" = 1 ]; then
      bench/pgo.sh target/pgo/authgate > /dev/null
      AUTHGATE_BIN=target/pgo/authgate
    else
      cargo build --release --quiet
      AUTHGATE_BIN=target/release/authgate
    fi
  fi
}

# A scratch folder ($work) whose processes ($pids) end with the script,
# an ECDSA P-256 certificate for 127.0.0.1 in it (bench.crt, bench.key)
# and a users.toml with the user "bench" (password $bench_password).
bench_start() {
  work=$(mktemp -d)
  pids=()
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  mkdir -p "$work/tmp"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/bench.key" -out "$work/bench.crt" -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  bench_password="bench-password-$RANDOM$RANDOM"
  printf '[users.bench]\npassword = "%s"\nroles = ["user"]\n' \
    "$(printf '%s\n' "$bench_password" | "$AUTHGATE_BIN" hash-password)" > "$work/users.toml"
}

# nginx's lines every config here starts with: NAME names the pid and error files.
nginx_head() { # name
  echo "pid $work/$1.pid; error_log $work/$1.err warn; daemon off; master_process on;"
  echo "events { worker_connections 4096; }"
}
nginx_temp_paths() {
  echo "client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;"
  echo "uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
}

# upstream_conf PORT [SERVER_LINES]: writes $work/upstream.conf, the app the
# benches proxy to: nginx, one worker, a fixed "hello from upstream" on
# PORT; SERVER_LINES go into its server block (more listeners, locations).
upstream_conf() {
  cat > "$work/upstream.conf" <<CONF
$(nginx_head upstream)
worker_processes 1;
http {
  $(nginx_temp_paths)
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    ${2:-}
    location / { default_type text/plain; return 200 "hello from upstream\n"; }
  }
}
CONF
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

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

# CPU time (user+system, in clock ticks) of the given processes and their threads.
ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    read -r -a fields < "/proc/$pid/stat"
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}

# Microseconds of CPU per request from a tick difference and a request count.
us_per_request() { # ticks requests
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'
}

# The median of the numbers on stdin (one per line or space-separated).
median() {
  tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%g\n", v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# wrk's latency figures ("812.00us", "1.23ms", "2.01s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0;
    else if (v ~ /s$/) printf "%.3f", v * 1000; else printf "%.3f", v }'
}
