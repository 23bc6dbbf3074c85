# Helpers the bench scripts share; sourced, not run.

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
