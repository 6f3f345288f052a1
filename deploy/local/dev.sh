#!/usr/bin/env bash
# Starts or stops a local cairn cluster from built binaries, without containers.
#   dev.sh up BIN_DIR   start in the background, return once a leader is elected
#   dev.sh down         stop everything started by `up`
# State (configs, data, logs, pids) lives in $CAIRN_DEV_DIR (default .dev).
# CAIRN_DEV_LOG_ONLY=1 starts the log nodes alone (no NATS, no mvcc replicas, no edge).
# CAIRN_DEV_WATCH_GATEWAYS=N starts N watch gateways (default 2, at most 8).
set -euo pipefail

# Settings of this script, read and removed: the services treat every CAIRN_*
# variable as one of their own settings.
dir="${CAIRN_DEV_DIR:-.dev}"
log_only="${CAIRN_DEV_LOG_ONLY:-}"
watch_gateways="${CAIRN_DEV_WATCH_GATEWAYS:-2}"
unset CAIRN_DEV_DIR CAIRN_DEV_LOG_ONLY CAIRN_DEV_WATCH_GATEWAYS
log_ports=(7001 7002 7003)
metrics_ports=(9101 9102 9103)
mvcc_ports=(7101 7102)
mvcc_metrics_ports=(9111 9112)
nats_port=4222
edge_port=2379
edge_metrics_port=9121
lease_ports=(7201 7202)
lease_metrics_ports=(9131 9132)
watch_ports=(7301 7302 7303 7304 7305 7306 7307 7308)
watch_metrics_ports=(9141 9142 9143 9144 9145 9146 9147 9148)

# Whether the /metrics on PORT has a line matching PATTERN. Read whole first:
# grep -q quitting early would fail curl (pipefail) on a long page.
metric_matches() {
    local body
    body="$(curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null)" || return 1
    grep -q "$2" <<<"$body"
}

leader_elected() {
    local port
    for port in "${metrics_ports[@]}"; do
        if metric_matches "$port" '^cairn_log_is_leader 1'; then
            return 0
        fi
    done
    return 1
}

up() {
    local bin_dir="$1"
    [ -x "$bin_dir/cairn-log" ] || { echo "no cairn-log in $bin_dir: run just build" >&2; exit 1; }
    if [ -s "$dir/pids" ]; then
        echo "a cluster is already running from $dir (just dev-down stops it)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    local members="" i
    for i in 1 2 3; do
        members+="\"$i=127.0.0.1:${log_ports[$((i - 1))]}\", "
    done
    : > "$dir/pids"
    # A token of this run: a node left over from an earlier one on these
    # ports is refused instead of disturbing the new cluster.
    local token
    token="cairn-dev-$(date +%s)-$$"
    for i in 1 2 3; do
        cat > "$dir/log-$i.toml" <<TOML
[node]
id = $i
listen = "127.0.0.1:${log_ports[$((i - 1))]}"
data_dir = "$dir/log-$i"

[cluster]
bootstrap = true
members = [${members%, }]
token = "$token"

[metrics]
listen = "127.0.0.1:${metrics_ports[$((i - 1))]}"
TOML
        nohup "$bin_dir/cairn-log" --config "$dir/log-$i.toml" >> "$dir/log-$i.out" 2>&1 &
        echo $! >> "$dir/pids"
    done
    for _ in $(seq 1 200); do
        leader_elected && break
        sleep 0.1
    done
    if ! leader_elected; then
        echo "no leader after 20 s; see $dir/log-*.out" >&2
        down
        exit 1
    fi
    echo "cairn-log nodes: 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 (metrics on 9101-9103)"
    [ "$log_only" = 1 ] && { echo "files in $dir; stop with: just dev-down"; return 0; }

    command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; down; exit 1; }
    nohup nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/nats" >> "$dir/nats.out" 2>&1 &
    echo $! >> "$dir/pids"
    for i in 1 2; do
        cat > "$dir/mvcc-$i.toml" <<TOML
[node]
name = "mvcc-$i"
listen = "127.0.0.1:${mvcc_ports[$((i - 1))]}"
data_dir = "$dir/mvcc-$i"

[log]
endpoints = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]

[nats]
url = "nats://127.0.0.1:$nats_port"

[seed]
replicas = ["127.0.0.1:${mvcc_ports[0]}", "127.0.0.1:${mvcc_ports[1]}"]

[metrics]
listen = "127.0.0.1:${mvcc_metrics_ports[$((i - 1))]}"
TOML
        nohup "$bin_dir/cairn-mvcc" --config "$dir/mvcc-$i.toml" >> "$dir/mvcc-$i.out" 2>&1 &
        echo $! >> "$dir/pids"
    done
    for _ in $(seq 1 200); do
        if metric_matches 9111 '^cairn_mvcc_applied_index [1-9]' \
            && metric_matches 9112 '^cairn_mvcc_applied_index [1-9]'; then
            echo "cairn-mvcc replicas: 127.0.0.1:7101 127.0.0.1:7102 (metrics on 9111-9112)"
            echo "nats-server (JetStream): 127.0.0.1:$nats_port"
            start_leases "$bin_dir"
            start_watches "$bin_dir"
            start_edge "$bin_dir"
            return 0
        fi
        sleep 0.1
    done
    echo "mvcc replicas not applying after 20 s; see $dir/mvcc-*.out" >&2
    down
    exit 1
}

start_leases() {
    local bin_dir="$1" i
    for i in 1 2; do
        cat > "$dir/lease-$i.toml" <<TOML
[node]
listen = "127.0.0.1:${lease_ports[$((i - 1))]}"

[mvcc]
endpoints = ["127.0.0.1:${mvcc_ports[0]}", "127.0.0.1:${mvcc_ports[1]}"]

[metrics]
listen = "127.0.0.1:${lease_metrics_ports[$((i - 1))]}"
TOML
        nohup "$bin_dir/cairn-lease" --config "$dir/lease-$i.toml" >> "$dir/lease-$i.out" 2>&1 &
        echo $! >> "$dir/pids"
    done
    for _ in $(seq 1 100); do
        if metric_matches "${lease_metrics_ports[0]}" '^cairn_lease_active 1' \
            || metric_matches "${lease_metrics_ports[1]}" '^cairn_lease_active 1'; then
            echo "cairn-lease instances (one active): 127.0.0.1:${lease_ports[0]} 127.0.0.1:${lease_ports[1]} (metrics on ${lease_metrics_ports[0]}-${lease_metrics_ports[1]})"
            return 0
        fi
        sleep 0.1
    done
    echo "no lease instance became active in 10 s; see $dir/lease-*.out" >&2
    down
    exit 1
}

start_watches() {
    local bin_dir="$1" i addrs=""
    for i in $(seq 1 "$watch_gateways"); do
        cat > "$dir/watch-$i.toml" <<TOML
[node]
listen = "127.0.0.1:${watch_ports[$((i - 1))]}"

[mvcc]
endpoints = ["127.0.0.1:${mvcc_ports[0]}", "127.0.0.1:${mvcc_ports[1]}"]

[nats]
url = "nats://127.0.0.1:$nats_port"

[metrics]
listen = "127.0.0.1:${watch_metrics_ports[$((i - 1))]}"
TOML
        nohup "$bin_dir/cairn-watch" --config "$dir/watch-$i.toml" >> "$dir/watch-$i.out" 2>&1 &
        echo $! >> "$dir/pids"
        echo $! >> "$dir/watch-pids"
        addrs+="\"127.0.0.1:${watch_ports[$((i - 1))]}\", "
    done
    watch_addrs="${addrs%, }"
    echo "cairn-watch gateways: $watch_gateways on 127.0.0.1:${watch_ports[0]}... (metrics from ${watch_metrics_ports[0]}; pids in $dir/watch-pids)"
}

start_edge() {
    local bin_dir="$1"
    cat > "$dir/edge.toml" <<TOML
[edge]
listen = "127.0.0.1:$edge_port"
advertise_client_urls = ["http://127.0.0.1:$edge_port"]

[backends]
mvcc = ["127.0.0.1:${mvcc_ports[0]}", "127.0.0.1:${mvcc_ports[1]}"]
log = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
lease = ["127.0.0.1:${lease_ports[0]}", "127.0.0.1:${lease_ports[1]}"]
watch = [$watch_addrs]

[metrics]
listen = "127.0.0.1:$edge_metrics_port"
TOML
    nohup "$bin_dir/cairn-edge" --config "$dir/edge.toml" >> "$dir/edge.out" 2>&1 &
    echo $! >> "$dir/pids"
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$edge_metrics_port/healthz" >/dev/null 2>&1; then
            echo "cairn-edge (the etcd v3 API; etcdctl --endpoints=127.0.0.1:$edge_port): 127.0.0.1:$edge_port (metrics on $edge_metrics_port)"
            echo "files in $dir; stop with: just dev-down"
            return 0
        fi
        sleep 0.1
    done
    echo "the edge did not start in 10 s; see $dir/edge.out" >&2
    down
    exit 1
}

down() {
    [ -f "$dir/pids" ] || { echo "nothing running from $dir"; return 0; }
    local pid
    while read -r pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done < "$dir/pids"
    for _ in $(seq 1 100); do
        local alive=0
        while read -r pid; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done < "$dir/pids"
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    # What has not stopped in 10 s is killed, so no node of this cluster is
    # left to talk to the next one on the same ports.
    while read -r pid; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "process $pid did not stop in 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done < "$dir/pids"
    rm -f "$dir/pids" "$dir/watch-pids"
    echo "stopped"
}

case "${1:-}" in
    up) up "${2:?usage: dev.sh up BIN_DIR}" ;;
    down) down ;;
    *) echo "usage: dev.sh up BIN_DIR | down" >&2; exit 2 ;;
esac
