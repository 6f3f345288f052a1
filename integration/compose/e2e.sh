#!/usr/bin/env bash
# The end-to-end test of deploy/compose/compose.yaml on a machine with Docker
# but no image registry: builds the images here (Debian base from Debian's
# packages, cairn from the binaries in BIN_DIR, NATS from Debian's nats-server,
# cairn-otlp-sink for Jaeger), brings the stack up with an override that
# changes images only, and checks it the way a user would, with etcdctl:
#   all healthy; put, get, watch, leases through the edge; --scale watch=3 and
#   new watch streams on all three gateways; one Put is one trace with spans
#   from the edge, mvcc, log and watch services; a log container killed and
#   writes go on; every service recreated with compose.tls.yaml (mutual TLS
#   among them, TLS at the edge) keeps the data, takes etcdctl and curl with
#   the client certificate and refuses plaintext, and has auth on with the
#   certificate's Common Name (root) as the user. Then tears everything down.
#   e2e.sh BIN_DIR
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin_dir="${1:?usage: e2e.sh BIN_DIR}"
work="$root/.e2e"
mkdir -p "$work"

export CAIRN_EDGE_PORT="${CAIRN_E2E_EDGE_PORT:-23799}"
export CAIRN_JAEGER_UI_PORT="${CAIRN_E2E_UI_PORT:-26686}"
endpoint="127.0.0.1:$CAIRN_EDGE_PORT"
query="http://127.0.0.1:$CAIRN_JAEGER_UI_PORT"
project=cairn-e2e

if docker compose version >/dev/null 2>&1; then
    compose_tool=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_tool=(docker-compose)
else
    echo "FAIL: neither 'docker compose' nor docker-compose is installed" >&2
    exit 1
fi
docker info >/dev/null 2>&1 || { echo "FAIL: no Docker engine answers" >&2; exit 1; }

compose() {
    "${compose_tool[@]}" -p "$project" -f deploy/compose/compose.yaml \
        -f deploy/compose/offline/compose.offline.yaml "$@"
}
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$endpoint" --command-timeout=10s "$@"; }
# Whose logs a failure shows: the plain stack's, then the TLS one's.
logs_of=compose
# A watcher in the background, remembered so that teardown ends it (not a
# subshell around it, which would leave etcdctl reconnecting to the next run).
background=()
watch_in_background() {
    local out="$1"; shift
    ETCDCTL_API=3 etcdctl --endpoints "$endpoint" watch "$@" >"$out" 2>&1 &
    background+=($!)
}

started=$SECONDS
step() { echo "== [$((SECONDS - started)) s] $*"; }
teardown() {
    local status=$?
    for pid in "${background[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$status" != 0 ]; then
        echo "-- service logs (last 30 lines each)" >&2
        "$logs_of" logs --no-color --tail 30 >&2 2>&1 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    echo "== e2e: $([ "$status" = 0 ] && echo passed || echo FAILED) in $((SECONDS - started)) s"
    exit "$status"
}
trap teardown EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Every container of the project healthy (running, for one with no health check).
wait_healthy() {
    local expected="$1" deadline=$((SECONDS + ${2:-240})) states
    while [ $SECONDS -lt $deadline ]; do
        states="$(compose ps -q | xargs -r docker inspect -f \
            '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}')"
        if [ "$(grep -c . <<<"$states")" = "$expected" ] && ! grep -qvE ' (healthy|running)$' <<<"$states"; then
            return 0
        fi
        sleep 1
    done
    echo "$states" >&2
    fail "not all $expected containers healthy"
}

# Retries a command until it succeeds or the deadline (seconds) passes.
eventually() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

step "images"
deploy/compose/offline/images.sh "$bin_dir"

step "up"
compose down -v --remove-orphans >/dev/null 2>&1 || true
up_started=$SECONDS
compose up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up"; }
wait_healthy 11
echo "   11 containers healthy $((SECONDS - up_started)) s after up"

step "KV through the edge"
# Healthy means serving; the log may still be electing its first leader.
first=$SECONDS
eventually 30 ctl put e2e/greeting hello || fail "put"
echo "   first put acknowledged $((SECONDS - first)) s after all were healthy"
[ "$(ctl get e2e/greeting --print-value-only)" = hello ] || fail "get"
ctl member list >/dev/null || fail "member list"
# etcd's JSON gateway on the same port: e2e/greeting is ZTJlL2dyZWV0aW5n, hello aGVsbG8=.
curl -sf "http://$endpoint/v3/kv/range" -d '{"key":"ZTJlL2dyZWV0aW5n"}' | grep -q '"value":"aGVsbG8="' \
    || fail "curl could not read e2e/greeting through the HTTP/JSON gateway"

step "watch"
watch_in_background "$work/watch.out" e2e/w --prefix
sleep 1
ctl put e2e/w/1 one >/dev/null
eventually 10 grep -q '^e2e/w/1$' "$work/watch.out" || fail "the watcher did not see e2e/w/1"

step "leases"
lease="$(ctl lease grant 60 | awk '{print $2}')"
[ -n "$lease" ] || fail "lease grant"
ctl put --lease="$lease" e2e/leased v >/dev/null || fail "put with a lease"
ctl lease keep-alive --once "$lease" | grep -q "keepalived with TTL" || fail "keep-alive"
ctl lease timetolive "$lease" --keys | grep -q "e2e/leased" || fail "timetolive lists the key"
ctl lease revoke "$lease" | grep -q revoked || fail "revoke"
[ -z "$(ctl get e2e/leased)" ] || fail "a revoked lease's key is still there"

step "scale watch to 3"
compose up -d --no-build --no-recreate --scale watch=3 >>"$work/up.log" 2>&1 || fail "scale"
wait_healthy 13
sleep 3 # the edge re-resolves backend names every 2 s
for i in $(seq 1 12); do
    watch_in_background "$work/stream-$i.out" "e2e/s/$i"
done
sleep 2
for i in $(seq 1 12); do ctl put "e2e/s/$i" "v$i" >/dev/null; done
for i in $(seq 1 12); do
    eventually 10 grep -q "^e2e/s/$i\$" "$work/stream-$i.out" || fail "stream $i heard nothing"
done
gateways=0 total=0
for container in $(compose ps -q watch); do
    streams="$(docker exec "$container" curl -fsS http://127.0.0.1:9100/metrics |
        awk '$1 == "cairn_watch_streams" { print $2 }')"
    echo "   gateway ${container:0:12}: ${streams:-?} streams"
    [ "${streams:-0}" -ge 1 ] || fail "gateway ${container:0:12} serves no stream"
    gateways=$((gateways + 1)) total=$((total + streams))
done
[ "$gateways" = 3 ] || fail "$gateways watch gateways, not 3"
# 12 new streams and the first watcher's: none lost, none left over.
[ "$total" = 13 ] || fail "$total watch streams on the gateways, not 13"

step "one Put, one trace"
sleep 1
ctl put e2e/traced value >/dev/null
trace_ok() {
    curl -fsS "$query/api/traces?service=cairn-edge&operation=etcdserverpb.KV%2FPut&limit=1" \
        >"$work/put-trace.json" &&
        python3 integration/compose/trace_tree.py cairn-edge cairn-mvcc cairn-log cairn-watch \
            "cairn.revisions process=$gateways" \
            <"$work/put-trace.json" >"$work/put-trace.txt" 2>&1
}
if ! eventually 30 trace_ok; then
    cat "$work/put-trace.txt" >&2
    fail "the Put's trace"
fi
cat "$work/put-trace.txt"

step "metrics"
metrics_of() {
    # Read whole before matching: grep -q quitting early would fail curl.
    docker exec "$(compose ps -q "$1" | head -n 1)" curl -fsS http://127.0.0.1:9100/metrics ||
        fail "$1's /metrics does not answer"
}
for pair in log-1:cairn_log_commit_index mvcc-1:cairn_mvcc_db_bytes mvcc-2:cairn_mvcc_publish_lag_revisions \
    edge:cairn_edge_call_seconds lease-1:cairn_lease_leases lease-2:cairn_lease_leases \
    watch:cairn_watch_streams; do
    service="${pair%%:*}" metric="${pair#*:}"
    metrics="$(metrics_of "$service")"
    grep -q "^$metric" <<<"$metrics" || fail "$service's /metrics has no $metric"
done
# The edge sends each lease call to either instance and a standby forwards it,
# so the active one, whichever it is, has served the calls above.
lease_calls="$( (metrics_of lease-1; metrics_of lease-2) |
    grep -c '^cairn_grpc_server_seconds_count{rpc_method="LeaseGrant"' || true)"
[ "$lease_calls" -ge 1 ] || fail "no lease instance counts the LeaseGrant it served"

step "kill a log container, writes go on"
docker kill "$(compose ps -q log-1)" >/dev/null
killed=$SECONDS
for i in $(seq 1 20); do
    eventually 15 ctl put "e2e/after-kill/$i" "$i" || fail "put $i after the kill"
done
echo "   20 puts acknowledged $((SECONDS - killed)) s after the kill"
[ "$(ctl get e2e/after-kill/ --prefix --keys-only | grep -c .)" = 20 ] ||
    fail "not every put after the kill is there"
[ "$(ctl get e2e/greeting --print-value-only)" = hello ] || fail "a put from before the kill is lost"

step "TLS everywhere (compose.tls.yaml)"
export CAIRN_TLS_DIR="$work/tls"
rm -rf "$CAIRN_TLS_DIR"
compose_tls() {
    compose -f deploy/compose/compose.tls.yaml -f deploy/compose/offline/compose.offline.tls.yaml "$@"
}
# From here the services' logs include the TLS step's own (certs, auth).
logs_of=compose_tls
compose_tls run --rm certs >"$work/certs.log" 2>&1 || { cat "$work/certs.log" >&2; fail "making certificates"; }
# Every cairn service is recreated with its certificate, on the same volumes.
tls_started=$SECONDS
compose_tls up -d --no-build >>"$work/up.log" 2>&1 || fail "up with TLS"
tls_ctl() {
    ETCDCTL_API=3 etcdctl --endpoints "$endpoint" --command-timeout=10s --cacert "$CAIRN_TLS_DIR/ca.crt" \
        --cert "$CAIRN_TLS_DIR/client.crt" --key "$CAIRN_TLS_DIR/client.key" "$@"
}
eventually 120 tls_ctl put e2e/over-tls yes || fail "a put with the compose client certificate"
echo "   first put over TLS $((SECONDS - tls_started)) s after the services were recreated"
[ "$(tls_ctl get e2e/greeting --print-value-only)" = hello ] || fail "a put from before the restart is lost"
if ctl --dial-timeout=2s --command-timeout=3s get e2e/greeting >/dev/null 2>&1; then
    fail "a plaintext client got in"
fi
# The auth step turns auth on: a wrong password is then refused (before, the
# answer is "authentication is not enabled"), and the certificate's user is
# root.
auth_on() {
    local answer
    answer="$(tls_ctl --user root:guess get e2e/greeting 2>&1 || true)"
    grep -q "authentication failed, invalid user ID or password" <<<"$answer"
}
eventually 120 auth_on || fail "auth is not on after compose.tls.yaml's auth step"
[ "$(tls_ctl get e2e/greeting --print-value-only)" = hello ] || fail "root, as the certificate's user, cannot read"
tls_curl() {
    curl -sf --cacert "$CAIRN_TLS_DIR/ca.crt" --cert "$CAIRN_TLS_DIR/client.crt" --key "$CAIRN_TLS_DIR/client.key" "$@"
}
# The JSON gateway takes no certificate as a user: it logs in with root's password.
token="$(tls_curl "https://$endpoint/v3/auth/authenticate" \
    -d "{\"name\":\"root\",\"password\":\"$(cat "$CAIRN_TLS_DIR/root.password")\"}" \
    | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
[ -n "$token" ] || fail "root could not log in through the JSON gateway"
tls_curl -H "Authorization: $token" "https://$endpoint/v3/kv/range" -d '{"key":"ZTJlL2dyZWV0aW5n"}' \
    | grep -q '"value":"aGVsbG8="' || fail "curl over TLS with root's token could not read e2e/greeting"
echo "   etcdctl with the client certificate (its user root) and curl with root's token in, a wrong"
echo "   password refused, plaintext refused; services on internal TLS"

step "sizes"
docker image inspect -f '{{.Size}}' cairn:offline | awk '{ printf "   cairn:offline %.0f MB\n", $1 / 1e6 }'
