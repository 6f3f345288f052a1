#!/usr/bin/env bash
# Builds the images compose.offline.yaml names, with no registry: the Debian
# base from Debian's packages, cairn's runtime image from the binaries in
# BIN_DIR, NATS from Debian's nats-server, and cairn-otlp-sink for Jaeger.
#   images.sh BIN_DIR        e.g. "$CARGO_TARGET_DIR/debug"
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin_dir="${1:?usage: images.sh BIN_DIR}"
base="cairn-debian:bookworm"

"$here/base-image.sh" "$base"

nats_server="$(command -v nats-server || true)"
[ -n "$nats_server" ] || { echo "nats-server is needed (apt-get install nats-server)" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin"
for binary in cairn-log cairn-mvcc cairn-edge cairn-lease cairn-watch cairnctl cairn-otlp-sink; do
    [ -x "$bin_dir/$binary" ] || { echo "$bin_dir/$binary is missing (build first)" >&2; exit 1; }
    # Debug information is most of a debug build's size and none of its use here.
    objcopy --strip-debug "$bin_dir/$binary" "$context/bin/$binary"
done
cp "$nats_server" "$context/bin/nats-server"
cp -r "$root/configs" "$context/configs"

build() {
    local tag="$1" dockerfile="$2"
    # The classic builder: it needs nothing beyond the local base image.
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$base" \
        -f "$here/$dockerfile" -t "$tag" "$context" >/dev/null 2>"$context/build.err" || {
        cat "$context/build.err" >&2
        exit 1
    }
    echo "image $tag: $(docker image inspect -f '{{.Size}}' "$tag") bytes"
}
build cairn:offline cairn.Dockerfile
build cairn-nats:offline nats.Dockerfile
build cairn-otlp-sink:offline otlp-sink.Dockerfile
