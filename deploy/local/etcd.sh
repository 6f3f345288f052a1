#!/usr/bin/env bash
# Starts or stops a real 3-member etcd on loopback, the reference the
# benchmark compares cairn with (Debian's etcd-server, default durability).
#   etcd.sh up     start in the background; return once it serves
#   etcd.sh down   stop what `up` started
# Clients use 127.0.0.1:23790-23792; state lives in $CAIRN_ETCD_DIR (default .bench-etcd).
set -euo pipefail

dir="${CAIRN_ETCD_DIR:-.bench-etcd}"
client_ports=(23790 23791 23792)
peer_ports=(23800 23801 23802)

up() {
    command -v etcd >/dev/null || { echo "etcd is needed (apt-get install etcd-server)" >&2; exit 1; }
    if [ -s "$dir/pids" ]; then
        echo "an etcd is already running from $dir" >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    local cluster="" i
    for i in 0 1 2; do
        cluster+="bench-$i=http://127.0.0.1:${peer_ports[$i]},"
    done
    for i in 0 1 2; do
        nohup env -u ETCDCTL_API etcd --name "bench-$i" --data-dir "$dir/data-$i" \
            --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
            --initial-cluster "${cluster%,}" >> "$dir/etcd-$i.out" 2>&1 &
        echo $! >> "$dir/pids"
    done
    for _ in $(seq 1 300); do
        if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${client_ports[0]}" put bench-ready 1 >/dev/null 2>&1; then
            echo "etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'): 127.0.0.1:${client_ports[0]}-${client_ports[2]} (3 members; pids in $dir/pids)"
            return 0
        fi
        sleep 0.1
    done
    echo "etcd did not serve within 30 s; see $dir/etcd-*.out" >&2
    down
    exit 1
}

down() {
    [ -f "$dir/pids" ] || { echo "no etcd running from $dir"; return 0; }
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
    rm -f "$dir/pids"
    echo "etcd stopped"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: etcd.sh up | down" >&2; exit 2 ;;
esac
