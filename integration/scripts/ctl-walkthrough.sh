#!/usr/bin/env bash
# One scripted etcdctl session, printed as a transcript that is the same for
# any etcd-compatible server and any etcdctl-compatible client, so that
# transcripts can be compared byte for byte: etcd with etcdctl against etcd
# with cairnctl, or etcd against cairn.
#
#   CTL=/usr/bin/etcdctl ENDPOINT=127.0.0.1:2379 ctl-walkthrough.sh
#
# The store must be fresh (revision 1): the transcript shows revisions.
#
# Each step prints `### ctl <arguments>`, then its stdout, its stderr (each
# line prefixed `stderr: `) and `[exit N]`. What legitimately differs between
# servers and runs (lease, member and cluster IDs, member names, versions,
# database sizes, raft terms and indexes, whether the endpoint asked leads a
# cluster of several, timings, URLs, the endpoint itself)
# is replaced by placeholders such as <LEASE_ID>; revisions, keys and values
# are kept exactly. etcdctl's own log lines on stderr (JSON from zap) are
# dropped.
set -uo pipefail

: "${CTL:?CTL must name the etcdctl-compatible client}"
: "${ENDPOINT:?ENDPOINT must be the server address, host:port}"
export ETCDCTL_API=3

work="$(mktemp -d)"
watch_pid=""
cleanup() {
    if [ -n "$watch_pid" ]; then
        kill "$watch_pid" 2>/dev/null
        wait "$watch_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

lease=""

# normalize, title and step.
source "$(dirname "${BASH_SOURCE[0]}")/walkthrough-lib.sh"

# ---- writes and reads (revisions 2 to 11) ----
for i in 0 1 2 3 4 5 6 7 8 9; do
    step put "key$i" "value$i"
done
step get key1 key6
step get key --prefix
step get key --prefix -w json
step get key --prefix --rev=5
step get key --prefix --sort-by=MODIFY --order=DESCEND --limit=3
step get key --from-key --keys-only --limit=2
step get key1 --print-value-only
step put key1 value1-b --prev-kv
step get key1 -w json
step get key1 --rev=100
step del key9
step del key7 key9 --prev-kv
step del nokey

# ---- transactions ----
printf '%s\n' 'mod("key1") > "0"' 'value("key2") = "value2"' '' \
    'put key2 txn-value' 'get key2' 'del key3' '' \
    'put never reached' '' >"$work/txn-succeeds"
step --stdin "$work/txn-succeeds" txn -i
printf '%s\n' 'version("key1") = "1"' '' \
    'put never reached' '' \
    'put txn-failed yes' 'get key --prefix --keys-only' 'del key0 --prev-kv' '' >"$work/txn-fails"
step --stdin "$work/txn-fails" txn
printf '%s\n' 'value("key1") = "value1-b"' '' 'get key1' '' '' >"$work/txn-json"
step --stdin "$work/txn-json" txn -w json

# ---- a watch from an old revision while writes happen ----
# The watch replays history from revision 12, then sees the new writes; it
# is stopped once the last write (key-end) has arrived, or after 20 s.
# `timeout` also bounds its life and, when stopped, stops the whole process
# group, in case the client is a wrapper script.
title watch key --prefix --rev=12 --prev-kv
timeout 30 "$CTL" --endpoints="$ENDPOINT" watch key --prefix --rev=12 --prev-kv \
    </dev/null >"$work/watch-out" 2>"$work/watch-err" &
watch_pid=$!
step put key5 watched-1
step put key6 watched-2
step del key5
step put key-end done
for _ in $(seq 200); do
    grep -qx 'done' "$work/watch-out" && break
    sleep 0.1
done
kill "$watch_pid" 2>/dev/null
wait "$watch_pid" 2>/dev/null
watch_pid=""
echo "### (output of: ctl watch key --prefix --rev=12 --prev-kv)"
normalize <"$work/watch-out"
normalize <"$work/watch-err" | sed 's/^/stderr: /'
echo "[stopped]"

# ---- leases ----
step lease grant 100
lease="$(sed -nE 's/^lease ([0-9a-f]+) granted.*/\1/p' "$work/out")"
if [ -z "$lease" ]; then
    echo "(no lease was granted; the lease steps cannot run)"
    lease="0"
fi
step put key-leased on-lease --lease="$lease"
step lease keep-alive --once "$lease"
step lease timetolive "$lease" --keys
step lease list
step lease revoke "$lease"
step get key-leased
step lease timetolive "$lease"

# ---- compaction ----
step compaction 15
step get key --prefix --rev=14
step get key --prefix --rev=15 --keys-only
title watch key --prefix --rev=10
timeout 10 "$CTL" --endpoints="$ENDPOINT" watch key --prefix --rev=10 \
    </dev/null >"$work/out" 2>"$work/err"
status=$?
normalize <"$work/out"
normalize <"$work/err" | sed 's/^/stderr: /'
echo "[exit $status]"

# ---- the cluster ----
step member list
step member list -w table
step endpoint status
step endpoint status -w table
step endpoint health
step snapshot save "$work/snapshot.db"

# ---- the final state ----
step get '' --from-key
