# The runtime stage of deploy/compose/Dockerfile, from binaries built on this
# machine instead of a Rust builder image, and a Debian base made by base-image.sh.
ARG BASE=cairn-debian:bookworm
FROM ${BASE}
RUN useradd --system --uid 10001 --home-dir /var/lib/cairn --create-home cairn \
 && install -d -o cairn -g cairn /var/lib/cairn/data
COPY bin/ /usr/local/bin/
COPY configs/ /etc/cairn/configs/
USER cairn
WORKDIR /var/lib/cairn
