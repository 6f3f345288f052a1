#!/usr/bin/env bash
# Starts or stops a local cairn cluster from built binaries, without containers.
#   dev.sh up BIN_DIR     start in the background, return once a leader is elected
#   dev.sh add-replica    start one more mvcc replica, then have the lease
#                         instances, the watch gateways and the edge use it
#   dev.sh down           stop everything started by `up` (and `add-replica`)
# State (configs, data, logs, pids, the layout) lives in $CAIRN_DEV_DIR (default .dev).
# CAIRN_DEV_LOG_NODES=N starts N log nodes: 1, 3 (the default) or 5. A data
#   directory keeps the number it was made with (remove it to change it).
# CAIRN_DEV_LOG_ONLY=1 starts the log nodes alone (no NATS, no mvcc replicas, no edge).
# CAIRN_DEV_WATCH_GATEWAYS=N starts N watch gateways (default 2, at most 8).
# `up` starts as many mvcc replicas as the data directory has had (2, plus
# each one `add-replica` added): every one of them is a consumer the log keeps
# its entries for.
set -euo pipefail

# Settings of this script, read and removed: the services treat every CAIRN_*
# variable as one of their own settings.
dir="${CAIRN_DEV_DIR:-.dev}"
log_only="${CAIRN_DEV_LOG_ONLY:-}"
watch_gateways="${CAIRN_DEV_WATCH_GATEWAYS:-2}"
requested_log_nodes="${CAIRN_DEV_LOG_NODES:-}"
unset CAIRN_DEV_DIR CAIRN_DEV_LOG_ONLY CAIRN_DEV_WATCH_GATEWAYS CAIRN_DEV_LOG_NODES

# Ports: the i-th process of a kind (from 1) listens on BASE + i.
log_base=7000 log_metrics_base=9100
mvcc_base=7100 mvcc_metrics_base=9110 max_mvcc_replicas=9
lease_base=7200 lease_metrics_base=9130 lease_instances=2
watch_base=7300 watch_metrics_base=9140 max_watch_gateways=8
nats_port=4222
edge_port=2379
edge_metrics_port=9121

# What `up` started, for `add-replica` and the next `up`: shell assignments.
layout="$dir/layout"
log_nodes=3
mvcc_replicas=2
bin_dir=""

read_layout() {
    if [ -f "$layout" ]; then
        # shellcheck disable=SC1090
        . "$layout"
    fi
}

write_layout() {
    cat > "$layout" <<EOF
bin_dir="$bin_dir"
log_nodes=$log_nodes
mvcc_replicas=$mvcc_replicas
watch_gateways=$watch_gateways
log_only="$log_only"
EOF
}

# "127.0.0.1:7001", "127.0.0.1:7002", ... for the first N of a kind.
addr_list() {
    local base="$1" count="$2" i list=""
    for i in $(seq 1 "$count"); do
        list+="\"127.0.0.1:$((base + i))\", "
    done
    echo "${list%, }"
}

# 127.0.0.1:7001 127.0.0.1:7002 ... for messages.
addr_words() {
    local base="$1" count="$2" i words=""
    for i in $(seq 1 "$count"); do
        words+="127.0.0.1:$((base + i)) "
    done
    echo "${words% }"
}

port_range() {
    if [ "$2" = 1 ]; then echo "$(($1 + 1))"; else echo "$(($1 + 1))-$(($1 + $2))"; fi
}

# Whether the /metrics on PORT has a line matching PATTERN. Read whole first:
# grep -q quitting early would fail curl (pipefail) on a long page.
metric_matches() {
    local body
    body="$(curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null)" || return 1
    grep -q "$2" <<<"$body"
}

healthy() {
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1
}

leader_elected() {
    local i
    for i in $(seq 1 "$log_nodes"); do
        if metric_matches "$((log_metrics_base + i))" '^cairn_log_is_leader 1'; then
            return 0
        fi
    done
    return 1
}

# Starts one process in the background: NAME (its files are NAME.toml,
# NAME.out, NAME.pid) and the binary. Its pid goes to $dir/pids (the edge's
# last: the benchmarks read it there).
start() {
    local name="$1" binary="$2" pid
    nohup "$bin_dir/$binary" --config "$dir/$name.toml" >> "$dir/$name.out" 2>&1 &
    pid=$!
    echo "$pid" > "$dir/$name.pid"
    echo "$pid" >> "$dir/pids"
    case "$name" in watch-*) echo "$pid" >> "$dir/watch-pids" ;; esac
}

# Stops one process started by `start` and forgets its pid.
stop() {
    local name="$1" pid
    pid="$(cat "$dir/$name.pid" 2>/dev/null)" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name ($pid) did not stop in 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    sed -i "/^$pid\$/d" "$dir/pids"
    [ -f "$dir/watch-pids" ] && sed -i "/^$pid\$/d" "$dir/watch-pids"
    rm -f "$dir/$name.pid"
}

up() {
    bin_dir="$1"
    [ -x "$bin_dir/cairn-log" ] || { echo "no cairn-log in $bin_dir: run just build" >&2; exit 1; }
    if [ -s "$dir/pids" ]; then
        echo "a cluster is already running from $dir (just dev-down stops it)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    # The replicas the data directory has had and the log's size come from
    # its layout; the rest from this run's settings.
    local want_watch_gateways="$watch_gateways" want_log_only="$log_only" want_bin_dir="$bin_dir"
    read_layout
    watch_gateways="$want_watch_gateways" log_only="$want_log_only" bin_dir="$want_bin_dir"
    # A data directory made before the layout was kept holds a 3-node log.
    local had_log_nodes="$log_nodes"
    log_nodes="${requested_log_nodes:-3}"
    case "$log_nodes" in
        1 | 3 | 5) ;;
        *) echo "CAIRN_DEV_LOG_NODES=$log_nodes: 1, 3 or 5 log nodes" >&2; exit 2 ;;
    esac
    if [ -d "$dir/log-1" ] && [ "$had_log_nodes" != "$log_nodes" ]; then
        echo "$dir holds the data of a $had_log_nodes-node log: start it with CAIRN_DEV_LOG_NODES=$had_log_nodes, or remove $dir (rm -rf $dir) to start a $log_nodes-node one" >&2
        exit 1
    fi
    if [ "$watch_gateways" -lt 1 ] || [ "$watch_gateways" -gt "$max_watch_gateways" ]; then
        echo "CAIRN_DEV_WATCH_GATEWAYS=$watch_gateways: 1 to $max_watch_gateways" >&2
        exit 2
    fi
    [ "$mvcc_replicas" -ge 2 ] || mvcc_replicas=2
    write_layout
    local members="" i
    for i in $(seq 1 "$log_nodes"); do
        members+="\"$i=127.0.0.1:$((log_base + i))\", "
    done
    : > "$dir/pids"
    : > "$dir/watch-pids"
    # A token of this run: a node left over from an earlier one on these
    # ports is refused instead of disturbing the new cluster.
    local token
    token="cairn-dev-$(date +%s)-$$"
    for i in $(seq 1 "$log_nodes"); do
        cat > "$dir/log-$i.toml" <<TOML
[node]
id = $i
listen = "127.0.0.1:$((log_base + i))"
data_dir = "$dir/log-$i"

[cluster]
bootstrap = true
members = [${members%, }]
token = "$token"

[metrics]
listen = "127.0.0.1:$((log_metrics_base + i))"
TOML
        start "log-$i" cairn-log
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
    echo "cairn-log nodes: $(addr_words "$log_base" "$log_nodes") (metrics on $(port_range "$log_metrics_base" "$log_nodes"))"
    [ "$log_only" = 1 ] && { echo "files in $dir; stop with: just dev-down"; return 0; }

    command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; down; exit 1; }
    nohup nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/nats" >> "$dir/nats.out" 2>&1 &
    echo "$!" > "$dir/nats.pid"
    echo "$!" >> "$dir/pids"
    for i in $(seq 1 "$mvcc_replicas"); do
        write_mvcc_config "$i"
        start "mvcc-$i" cairn-mvcc
    done
    for _ in $(seq 1 200); do
        local applying=1
        for i in $(seq 1 "$mvcc_replicas"); do
            metric_matches "$((mvcc_metrics_base + i))" '^cairn_mvcc_applied_index [1-9]' || applying=0
        done
        if [ "$applying" = 1 ]; then
            echo "cairn-mvcc replicas: $(addr_words "$mvcc_base" "$mvcc_replicas") (metrics on $(port_range "$mvcc_metrics_base" "$mvcc_replicas"))"
            echo "nats-server (JetStream): 127.0.0.1:$nats_port"
            start_leases
            start_watches
            start_edge
            echo "files in $dir; stop with: just dev-down"
            return 0
        fi
        sleep 0.1
    done
    echo "mvcc replicas not applying after 20 s; see $dir/mvcc-*.out" >&2
    down
    exit 1
}

# Every replica lists every replica to copy its store from (its own address
# is skipped), so one list serves them all.
write_mvcc_config() {
    local i="$1"
    cat > "$dir/mvcc-$i.toml" <<TOML
[node]
name = "mvcc-$i"
listen = "127.0.0.1:$((mvcc_base + i))"
data_dir = "$dir/mvcc-$i"

[log]
endpoints = [$(addr_list "$log_base" "$log_nodes")]

[nats]
url = "nats://127.0.0.1:$nats_port"

[seed]
replicas = [$(addr_list "$mvcc_base" "$mvcc_replicas")]

[metrics]
listen = "127.0.0.1:$((mvcc_metrics_base + i))"
TOML
}

write_lease_config() {
    local i="$1"
    cat > "$dir/lease-$i.toml" <<TOML
[node]
listen = "127.0.0.1:$((lease_base + i))"

[mvcc]
endpoints = [$(addr_list "$mvcc_base" "$mvcc_replicas")]

[metrics]
listen = "127.0.0.1:$((lease_metrics_base + i))"
TOML
}

lease_active() {
    local i
    for i in $(seq 1 "$lease_instances"); do
        metric_matches "$((lease_metrics_base + i))" '^cairn_lease_active 1' && { echo "$i"; return 0; }
    done
    return 1
}

wait_lease_active() {
    for _ in $(seq 1 "$1"); do
        lease_active >/dev/null && return 0
        sleep 0.1
    done
    return 1
}

start_leases() {
    local i
    for i in $(seq 1 "$lease_instances"); do
        write_lease_config "$i"
        start "lease-$i" cairn-lease
    done
    if wait_lease_active 100; then
        echo "cairn-lease instances (one active): $(addr_words "$lease_base" "$lease_instances") (metrics on $(port_range "$lease_metrics_base" "$lease_instances"))"
        return 0
    fi
    echo "no lease instance became active in 10 s; see $dir/lease-*.out" >&2
    down
    exit 1
}

write_watch_config() {
    local i="$1"
    cat > "$dir/watch-$i.toml" <<TOML
[node]
listen = "127.0.0.1:$((watch_base + i))"

[mvcc]
endpoints = [$(addr_list "$mvcc_base" "$mvcc_replicas")]

[nats]
url = "nats://127.0.0.1:$nats_port"

[metrics]
listen = "127.0.0.1:$((watch_metrics_base + i))"
TOML
}

start_watches() {
    local i
    for i in $(seq 1 "$watch_gateways"); do
        write_watch_config "$i"
        start "watch-$i" cairn-watch
    done
    echo "cairn-watch gateways: $(addr_words "$watch_base" "$watch_gateways") (metrics on $(port_range "$watch_metrics_base" "$watch_gateways"); pids in $dir/watch-pids)"
}

write_edge_config() {
    cat > "$dir/edge.toml" <<TOML
[edge]
listen = "127.0.0.1:$edge_port"
advertise_client_urls = ["http://127.0.0.1:$edge_port"]

[backends]
mvcc = [$(addr_list "$mvcc_base" "$mvcc_replicas")]
log = [$(addr_list "$log_base" "$log_nodes")]
lease = [$(addr_list "$lease_base" "$lease_instances")]
watch = [$(addr_list "$watch_base" "$watch_gateways")]

[metrics]
listen = "127.0.0.1:$edge_metrics_port"
TOML
}

start_edge() {
    write_edge_config
    start edge cairn-edge
    for _ in $(seq 1 100); do
        if healthy "$edge_metrics_port"; then
            echo "cairn-edge (the etcd v3 API; etcdctl --endpoints=127.0.0.1:$edge_port): 127.0.0.1:$edge_port (metrics on $edge_metrics_port)"
            return 0
        fi
        sleep 0.1
    done
    echo "the edge did not start in 10 s; see $dir/edge.out" >&2
    down
    exit 1
}

# Whether replica I answers a linearizable read itself: it has a store it may
# serve (a replica still copying one refuses every call).
replica_serves() {
    "$bin_dir/cairnctl" --endpoints "127.0.0.1:$((mvcc_base + $1))" --command-timeout 2s \
        get cairn-dev-probe >/dev/null 2>&1
}

# One more replica, mvcc-N+1: its own ports and data directory, the running
# replicas as the peers it copies a store from when the log has purged what
# it needs. Once it serves, the lease instances (the standby first), the watch
# gateways and the edge, one at a time, are restarted with it in their lists:
# they read their backends from their config at start. The edge is stateless
# and clients reconnect; watch streams on a restarted gateway end, as when a
# gateway dies, and clients re-create them; leases carry over to the other
# lease instance as in a takeover.
add_replica() {
    [ -s "$dir/pids" ] || { echo "no cluster is running from $dir (just dev starts one)" >&2; exit 1; }
    read_layout
    [ "$log_only" != 1 ] || { echo "the cluster in $dir runs the log alone" >&2; exit 1; }
    [ -x "$bin_dir/cairnctl" ] || { echo "no cairnctl in $bin_dir: run just build" >&2; exit 1; }
    if [ "$mvcc_replicas" -ge "$max_mvcc_replicas" ]; then
        echo "already $mvcc_replicas replicas, the most dev.sh gives ports to" >&2
        exit 1
    fi
    local i new=$((mvcc_replicas + 1))
    mvcc_replicas=$new
    write_layout
    # Every replica's config lists the new one as a peer, for its next start.
    for i in $(seq 1 "$new"); do
        write_mvcc_config "$i"
    done
    # Before the edge's pid, which stays last in $dir/pids.
    local edge_pid
    edge_pid="$(cat "$dir/edge.pid")"
    nohup "$bin_dir/cairn-mvcc" --config "$dir/mvcc-$new.toml" >> "$dir/mvcc-$new.out" 2>&1 &
    echo "$!" > "$dir/mvcc-$new.pid"
    sed -i "/^$edge_pid\$/i $!" "$dir/pids"
    echo "mvcc-$new starting on 127.0.0.1:$((mvcc_base + new)) (metrics on $((mvcc_metrics_base + new)), data in $dir/mvcc-$new, log in $dir/mvcc-$new.out)"
    local served=0
    for _ in $(seq 1 600); do
        if replica_serves "$new"; then served=1; break; fi
        sleep 0.5
    done
    if [ "$served" != 1 ]; then
        echo "mvcc-$new does not serve after 5 minutes; see $dir/mvcc-$new.out (it keeps running; just dev-down stops it)" >&2
        exit 1
    fi
    local applied
    applied="$(curl -fsS "http://127.0.0.1:$((mvcc_metrics_base + new))/metrics" | awk '$1 == "cairn_mvcc_applied_index" { print $2 }')"
    if grep -q "the copy is whole" "$dir/mvcc-$new.out"; then
        echo "mvcc-$new serves at log index $applied (it copied a peer's store: see $dir/mvcc-$new.out)"
    else
        echo "mvcc-$new serves at log index $applied"
    fi

    local active
    active="$(lease_active || true)"
    for i in $(seq 1 "$lease_instances"); do
        [ "$i" = "$active" ] && continue
        restart_lease "$i"
    done
    [ -n "$active" ] && restart_lease "$active"
    if ! wait_lease_active 300; then
        echo "no lease instance is active 30 s after the restarts; see $dir/lease-*.out" >&2
        exit 1
    fi
    echo "cairn-lease instances restarted with $new replicas (lease-$(lease_active) active)"
    for i in $(seq 1 "$watch_gateways"); do
        stop "watch-$i"
        write_watch_config "$i"
        start "watch-$i" cairn-watch
        wait_healthy "watch-$i" "$((watch_metrics_base + i))"
    done
    echo "cairn-watch gateways restarted with $new replicas"
    stop edge
    start_edge
    echo "the edge restarted with mvcc backends $(addr_words "$mvcc_base" "$new")"
}

restart_lease() {
    local i="$1"
    stop "lease-$i"
    write_lease_config "$i"
    start "lease-$i" cairn-lease
    wait_healthy "lease-$i" "$((lease_metrics_base + i))"
}

wait_healthy() {
    for _ in $(seq 1 100); do
        healthy "$2" && return 0
        sleep 0.1
    done
    echo "$1 did not start in 10 s; see $dir/$1.out" >&2
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
    rm -f "$dir/pids" "$dir/watch-pids" "$dir"/*.pid
    echo "stopped"
}

case "${1:-}" in
    up) up "${2:?usage: dev.sh up BIN_DIR}" ;;
    add-replica) add_replica ;;
    down) down ;;
    *) echo "usage: dev.sh up BIN_DIR | add-replica | down" >&2; exit 2 ;;
esac
