# syntax=docker/dockerfile:1
# otpd's container image: a release build with cargo alone (protox compiles the protos; no system protoc), copied
# into a distroless runtime with glibc and OpenSSL's libraries and nothing else: no shell, no package manager, a non-root user.
#
#   docker build -t otpd .
#   docker run --rm -p 50051:50051 -p 50052:50052 --env-file otpd.env \
#     -v /etc/otpd/tls:/etc/otpd/tls:ro -v /etc/otpd/secrets:/run/secrets/otpd:ro otpd
#
# See docs/operations.md ("Deploying") for the settings a production container needs.

FROM rust:1.95-slim-bookworm AS build
# OpenSSL's headers for webauthn-rs (the passkeys); the runtime image's libssl3 is Debian 12's too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: the manifest, the protos build.rs compiles, the migrations sqlx embeds, the sources
# and the bench targets Cargo.toml declares.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY migrations migrations
COPY benches benches
COPY src src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin otpd --bin otpctl \
    && install -D -m 0755 target/release/otpd /out/otpd \
    && install -D -m 0755 target/release/otpctl /out/otpctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/otpd /usr/local/bin/otpd
COPY --from=build /out/otpctl /usr/local/bin/otpctl
# The nonroot user's home: a development SQLite file and pepper land here; production uses PostgreSQL and a
# mounted pepper file, and nothing is written.
WORKDIR /home/nonroot
# Numeric (distroless' nonroot is 65532), so that Kubernetes' runAsNonRoot can check it without reading
# /etc/passwd.
USER 65532:65532
# Inside a container the listeners must take connections from outside it; the ports are otpd's defaults. Prod mode
# serves the admin listener off loopback only with TLS, so both listeners serve the certificate the operator mounts
# at /etc/otpd/tls (tls.crt: the chain, leaf first; tls.key: its key, readable by uid 65532; the names of a
# Kubernetes TLS secret). SIGHUP re-reads them.
ENV OTPD_LISTEN=0.0.0.0:50051 \
    OTPD_ADMIN_LISTEN=0.0.0.0:50052 \
    OTPD_LOG_FORMAT=json \
    OTPD_MODE=prod \
    OTPD_TLS_CERT=/etc/otpd/tls/tls.crt \
    OTPD_TLS_KEY=/etc/otpd/tls/tls.key
EXPOSE 50051 50052
# gRPC health (grpc.health.v1) on the public listener, over TLS with the certificate of OTPD_TLS_CERT pinned:
# NOT_SERVING while the database is unreachable.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/otpd", "healthcheck", "--timeout", "3s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/otpd"]
CMD ["serve"]
