# NATS from Debian's nats-server package, standing in for the official image:
# same arguments (the entrypoint is the server), same ports.
ARG BASE=cairn-debian:bookworm
FROM ${BASE}
COPY bin/nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
