# The everyday commands. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Builds share one target directory; CI points it at a cache.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

default:
    @just --list

# Every binary, debug profile (what the tests and `just dev` run).
build *flags:
    cargo build --workspace --bins --locked {{flags}}

# Every test: unit tests beside the code, the cross-process tests in integration/, and the compose end-to-end test.
test *flags: build
    cargo test --workspace --locked {{flags}}
    integration/compose/e2e.sh "$CARGO_TARGET_DIR/debug"

# deploy/compose/compose.yaml end to end with images built here (no registry needed): health, etcdctl, scaling, a trace, a killed log node.
e2e-compose: build
    integration/compose/e2e.sh "$CARGO_TARGET_DIR/debug"

# Random faults against a whole cairn (3 or 5 log nodes) for DURATION (e.g. 10m) under a recorded workload, judged by the history checker; prints a summary table (CI runs 40 s of it).
chaos duration="10m" log_nodes="3": build
    CAIRNTEST_CHAOS_FOR={{duration}} CAIRNTEST_LOG_NODES={{log_nodes}} cargo test -p cairn-integration --locked --test nemesis cairn_stays -- --nocapture

# Malformed input (random bytes, lying gRPC frames, wrong wire types, extreme values, broken streams) at every public RPC of the edge for DURATION; prints calls per RPC and answers by code (CI runs 45 s of it).
fuzz-edge duration="5m": build
    CAIRNTEST_FUZZ_FOR={{duration}} cargo test -p cairn-integration --locked --test malformed_input -- --nocapture

# One crate's tests, e.g. `just test-crate cairn-log`.
test-crate crate *flags: build
    cargo test -p {{crate}} --locked {{flags}}

# Read-only gate: formatting and clippy with warnings as errors.
lint: check-fmt clippy

check-fmt:
    cargo fmt --all -- --check

clippy *flags:
    cargo clippy --workspace --all-targets --locked {{flags}} -- -D warnings

# Rewrites: formatting and clippy's machine-applicable fixes.
fix:
    cargo clippy --workspace --all-targets --fix --allow-dirty --allow-staged
    cargo fmt --all

# Starts a local cluster in the background and returns when it is ready: `just dev release` runs release binaries (for trying cairn out or measuring it; several times faster), `just dev` debug ones (what the tests run). `CAIRN_DEV_LOG_NODES=5 just dev` (or `just dev-5`) runs five log nodes instead of three (1 also works).
dev profile="debug":
    if [ "{{profile}}" = release ]; then cargo build --release --locked --bins; \
    elif [ "{{profile}}" = debug ]; then cargo build --workspace --bins --locked; \
    else echo "just dev [debug|release]" >&2; exit 2; fi
    deploy/local/dev.sh up "$CARGO_TARGET_DIR/{{profile}}"

# `just dev` with five log nodes (127.0.0.1:7001-7005): two can be lost.
dev-5 profile="debug":
    CAIRN_DEV_LOG_NODES=5 just dev {{profile}}

# One more mvcc replica in the running `just dev` cluster (127.0.0.1:7103, then 7104, ...), copying a peer's store if the log has purged what it needs; then the lease instances, watch gateways and the edge restart one at a time to use it.
dev-add-replica:
    deploy/local/dev.sh add-replica

# Stops what `just dev` started.
dev-down:
    deploy/local/dev.sh down

# Propose and read-index throughput and latency of a release-built 3-node cairn-log, and the disk's raw fsync rate.
bench-log duration="10s" clients="1,64":
    cargo build --release --locked -p cairn-log -p cairn-bench
    CAIRN_DEV_DIR=.bench CAIRN_DEV_LOG_ONLY=1 deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"
    status=0; \
    "$CARGO_TARGET_DIR/release/cairn-bench" fsync --dir .bench --count 2000 || status=$?; \
    for op in propose read-index; do \
        "$CARGO_TARGET_DIR/release/cairn-bench" log --op $op --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --clients {{clients}} --duration {{duration}} --size 256 || status=$?; \
    done; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh down; exit $status

# What the edge adds: etcd KV puts and reads through the edge and straight to one mvcc replica, with the edge's CPU per 10k requests.
bench-edge duration="10s" clients="1,64":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"
    status=0; edge_pid="$(tail -n 1 .bench/pids)"; \
    for op in put range range-serializable; do \
        "$CARGO_TARGET_DIR/release/cairn-bench" kv --op $op --endpoint 127.0.0.1:2379 --label edge --cpu-pid "$edge_pid" --clients {{clients}} --duration {{duration}} || status=$?; \
        "$CARGO_TARGET_DIR/release/cairn-bench" kv --op $op --endpoint 127.0.0.1:7101 --label direct --clients {{clients}} --duration {{duration}} || status=$?; \
    done; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh down; exit $status

# Leases through the edge: time to grant N leases with a key each, keep-alive throughput and latency over 10 streams, and the log commands their checkpoints cost idle and while renewing. Starts from empty data (an earlier run's leases would count as this run's); TTL 120 s because granting 100,000 leases plus the idle period can exceed 60 s.
bench-lease leases="10000" duration="10s":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    if [ -s .bench/pids ]; then echo "a cluster is already running from .bench (CAIRN_DEV_DIR=.bench deploy/local/dev.sh down)" >&2; exit 1; fi
    rm -rf .bench
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"
    status=0; \
    "$CARGO_TARGET_DIR/release/cairn-bench" lease --endpoint 127.0.0.1:2379 --leases {{leases}} --ttl 120 --duration {{duration}} --lease-metrics http://127.0.0.1:9131/metrics,http://127.0.0.1:9132/metrics || status=$?; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh down; exit $status

# Watch fan-out through the edge with 1, 2 and then 3 gateways: N watchers on one prefix, puts at a fixed rate, put-to-event latency, and each gateway's CPU and memory (CPU per million events staying flat as gateways are added is fan-out scaling with cores).
bench-watch watchers="1000" rate="1000" duration="10s":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    if [ -s .bench/pids ]; then echo "a cluster is already running from .bench (CAIRN_DEV_DIR=.bench deploy/local/dev.sh down)" >&2; exit 1; fi
    status=0; \
    for gateways in 1 2 3; do \
        rm -rf .bench; \
        CAIRN_DEV_DIR=.bench CAIRN_DEV_WATCH_GATEWAYS=$gateways deploy/local/dev.sh up "$CARGO_TARGET_DIR/release" || exit 1; \
        "$CARGO_TARGET_DIR/release/cairn-bench" watch --endpoint 127.0.0.1:2379 --watchers {{watchers}} --rate {{rate}} --duration {{duration}} --label "$gateways gw" --gateway-pids "$(paste -sd, .bench/watch-pids)" || status=$?; \
        CAIRN_DEV_DIR=.bench deploy/local/dev.sh down; \
    done; exit $status

# etcd's HTTP/JSON gateway against gRPC on one release-built cairn: puts and linearizable ranges with 1 and 64 clients, the two transports alternating for `rounds` rounds, with the edge's CPU per 10k requests.
bench-http duration="5s" rounds="2":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    if [ -s .bench/pids ]; then echo "a cluster is already running from .bench (CAIRN_DEV_DIR=.bench deploy/local/dev.sh down)" >&2; exit 1; fi
    rm -rf .bench
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"
    status=0; edge_pid="$(tail -n 1 .bench/pids)"; \
    for round in $(seq {{rounds}}); do for op in put range; do for transport in grpc http; do \
        "$CARGO_TARGET_DIR/release/cairn-bench" kv --op $op --transport $transport --label "$transport round $round" --cpu-pid "$edge_pid" --clients 1,64 --duration {{duration}} || status=$?; \
    done; done; done; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh down; exit $status

# Memory per idle watcher, cairn's watch gateways against etcd's member, each on fresh processes: N watchers on keys of their own over 100 streams, resident memory before and after (the edge's growth shown apart).
bench-idle-watchers watchers="100000":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    if [ -s .bench/pids ]; then echo "a cluster is already running from .bench (CAIRN_DEV_DIR=.bench deploy/local/dev.sh down)" >&2; exit 1; fi
    if [ -s .bench-etcd/pids ]; then echo "an etcd is already running from .bench-etcd (deploy/local/etcd.sh down)" >&2; exit 1; fi
    rm -rf .bench
    trap 'deploy/local/etcd.sh down; CAIRN_DEV_DIR=.bench deploy/local/dev.sh down' EXIT; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"; \
    deploy/local/etcd.sh up; \
    "$CARGO_TARGET_DIR/release/cairn-bench" watch-idle --endpoint 127.0.0.1:23790 --watchers {{watchers}} \
        --holder-pids "$(head -n 1 .bench-etcd/pids)" --label etcd && \
    "$CARGO_TARGET_DIR/release/cairn-bench" watch-idle --endpoint 127.0.0.1:2379 --watchers {{watchers}} \
        --holder-pids "$(paste -sd, .bench/watch-pids)" --other-pids "$(tail -n 1 .bench/pids)" --label cairn

# cairn against a real 3-member etcd 3.4 on this machine: every workload (puts, a hot key, CAS transactions, ranges, watch fan-out, 10,000 watchers on keys of their own with puts/s beside them, lease keep-alives) through the same client, alternating rounds; prints figures, cairn/etcd ratios and each process's peak memory, writes .bench/compare.json and .bench/compare.png. About 4 minutes on 2 cores with the build cached; etcd is measured through its leader; extra flags go to `cairn-bench compare`, e.g. `just bench 3s 2 --only put-1,range-lin`; `just bench-auth` does the same with auth on in both.
bench duration="3s" rounds="2" *flags="":
    cargo build --release --locked -p cairn-log -p cairn-mvcc -p cairn-edge -p cairn-lease -p cairn-watch -p cairn-bench
    if [ -s .bench/pids ]; then echo "a cluster is already running from .bench (CAIRN_DEV_DIR=.bench deploy/local/dev.sh down)" >&2; exit 1; fi
    if [ -s .bench-etcd/pids ]; then echo "an etcd is already running from .bench-etcd (deploy/local/etcd.sh down)" >&2; exit 1; fi
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || echo "no DejaVuSans.ttf: the chart will be skipped (apt-get install fonts-dejavu-core)" >&2
    rm -rf .bench
    trap 'deploy/local/etcd.sh down; CAIRN_DEV_DIR=.bench deploy/local/dev.sh down' EXIT; \
    CAIRN_DEV_DIR=.bench deploy/local/dev.sh up "$CARGO_TARGET_DIR/release"; \
    deploy/local/etcd.sh up; \
    user=""; \
    if [ -n "${BENCH_AUTH:-}" ]; then \
        for endpoint in 127.0.0.1:23790 127.0.0.1:2379; do \
            ETCDCTL_API=3 etcdctl --endpoints "$endpoint" user add root:bench >/dev/null; \
            ETCDCTL_API=3 etcdctl --endpoints "$endpoint" auth enable >/dev/null; \
        done; \
        user="--user=root:bench"; \
    fi; \
    timeout --signal=INT --kill-after=30 900 "$CARGO_TARGET_DIR/release/cairn-bench" $user compare \
        --etcd 127.0.0.1:23790 --cairn 127.0.0.1:2379 --duration {{duration}} --rounds {{rounds}} \
        --etcd-pids .bench-etcd/pids --cairn-pids .bench/pids,.bench/watch-pids \
        --json .bench/compare.json --png .bench/compare.png {{flags}}

# `just bench` with etcd's auth on in etcd and in cairn: every call is root's, with a token from Authenticate (what auth costs each of them).
bench-auth duration="3s" rounds="2" *flags="":
    BENCH_AUTH=1 just bench {{duration}} {{rounds}} {{flags}}

# Redraws .bench/compare.png from .bench/compare.json, e.g. after changing the chart.
bench-chart:
    cargo build --release --locked -p cairn-bench
    "$CARGO_TARGET_DIR/release/cairn-bench" chart --json .bench/compare.json --png .bench/compare.png
