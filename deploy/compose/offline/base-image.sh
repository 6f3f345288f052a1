#!/usr/bin/env bash
# Builds the Debian base image the offline images start from, out of Debian's
# packages alone (debootstrap + docker import), for machines that can reach a
# Debian mirror but no image registry.
#   base-image.sh [TAG]      default TAG: cairn-debian:bookworm
# Skips the work when TAG exists already. Needs root (or sudo) and debootstrap.
set -euo pipefail

tag="${1:-cairn-debian:bookworm}"
suite="${CAIRN_DEBIAN_SUITE:-bookworm}"
mirror="${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present"
    exit 0
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

command -v debootstrap >/dev/null || {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
}

rootfs="$(mktemp -d)"
trap 'as_root rm -rf "$rootfs"' EXIT
echo "base image $tag: debootstrap $suite from $mirror"
# curl and wget: the health checks of the cairn and NATS images use them.
as_root debootstrap --variant=minbase --include=ca-certificates,curl,wget \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    exit 1
}
rm -f "$rootfs.log"
as_root chroot "$rootfs" apt-get clean
as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
as_root tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "base image $tag: $(docker image inspect -f '{{.Size}}' "$tag") bytes"
