#!/usr/bin/env bash
# A private Docker engine (containerd + dockerd) for tests, benchmarks and local runs, isolated from
# any system Docker: its own data root, state, sockets and pidfiles under DIR, no iptables rules,
# no IP masquerading, and gVisor registered as the `runsc` runtime when runsc is installed (with
# the arguments a container without a network needs on this runsc; --host-uds=all so Unix sockets
# in bind-mounted host directories work both ways).
#
#   scripts/docker-daemon.sh start DIR   # prints DOCKER_HOST=unix://DIR/docker.sock
#   scripts/docker-daemon.sh stop DIR    # stops both daemons, removes docker0 if dockerd made it, deletes DIR
#
# Needs root and Debian's docker.io, containerd and runc (apt-get install docker.io containerd runc).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

stop_pid() {
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  start)
    for bin in containerd dockerd runc; do
      command -v "$bin" >/dev/null || { echo "$0: $bin not found (apt-get install docker.io containerd runc)" >&2; exit 1; }
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # Whether docker0 existed before: only a bridge this daemon made is removed at stop.
    if ip link show docker0 >/dev/null 2>&1; then : > "$dir/docker0.preexisting"; fi
    cat > "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
EOF
    runtimes='{}'
    if command -v runsc >/dev/null; then
      runtimes="{\"runsc\": {\"path\": \"$(command -v runsc)\", \"runtimeArgs\": [\"--platform=systrap\", \"--network=none\", \"--host-uds=all\"]}}"
    fi
    cat > "$dir/daemon.json" <<EOF
{"runtimes": $runtimes}
EOF
    containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
    echo $! > "$dir/containerd.pid"
    for _ in $(seq 1 100); do [ -S "$dir/containerd.sock" ] && break; sleep 0.1; done
    [ -S "$dir/containerd.sock" ] || { echo "$0: containerd did not start (see $dir/containerd.log)" >&2; exit 1; }
    # --bridge=none: no docker0 at all; workspaces use --network none and nothing here needs a bridge.
    dockerd --config-file "$dir/daemon.json" --containerd "$dir/containerd.sock" \
      --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$dir/docker.sock" \
      --pidfile "$dir/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
      >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 200); do
      docker -H "unix://$dir/docker.sock" version >/dev/null 2>&1 && break
      sleep 0.1
    done
    docker -H "unix://$dir/docker.sock" version >/dev/null 2>&1 || { echo "$0: dockerd did not start (see $dir/dockerd.log)" >&2; exit 1; }
    echo "DOCKER_HOST=unix://$dir/docker.sock"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    if [ -S "$dir/docker.sock" ]; then
      docker -H "unix://$dir/docker.sock" ps -aq 2>/dev/null | while read -r id; do
        docker -H "unix://$dir/docker.sock" rm -f "$id" >/dev/null 2>&1 || true
      done
    fi
    stop_pid "$dir/dockerd.pid"
    stop_pid "$dir/containerd.pid"
    if [ ! -e "$dir/docker0.preexisting" ] && ip link show docker0 >/dev/null 2>&1; then ip link delete docker0 || true; fi
    # Mounts dockerd or the shims left under the data root (overlay, shm) go before the files.
    { grep -F " $dir/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
