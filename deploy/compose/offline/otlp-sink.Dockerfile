# cairn-otlp-sink standing in for Jaeger all-in-one: OTLP/gRPC on 4317 and
# Jaeger's query API on 16686.
ARG BASE=cairn-debian:bookworm
FROM ${BASE}
COPY bin/cairn-otlp-sink /usr/local/bin/cairn-otlp-sink
EXPOSE 4317 16686
ENTRYPOINT ["cairn-otlp-sink"]
