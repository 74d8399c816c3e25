# rethread container image: one static (musl) binary on `scratch`, running as a non-root user.
#
#   docker build -t rethread .                                  # or: podman build --format docker …
#   docker run --rm -p 8080:8080 -e RETHREAD_UPSTREAM=https://api.openai.com rethread
#
# Two stages. `builder` compiles the binary and lays out under /out exactly the files the final
# image is made of:
#
#   /out/rethread                              the static binary
#   /out/etc/ssl/certs/ca-certificates.crt     CA roots (rustls-native-certs reads this path)
#   /out/etc/passwd, /out/etc/group            the non-root user 65532 ("rethread")
#   /out/var/lib/rethread                      the file store's directory, owned by 65532
#
# The final stage copies only those paths, so `builder` can be replaced by a local directory
# with the same layout (a binary built outside the image, e.g. by scripts/image-check.sh):
#
#   podman build --format docker --build-context builder=DIR -t rethread .   # DIR/out/rethread, …
#
# Settings are the usual RETHREAD_* environment variables (README.md, config/rethread.toml);
# the image only changes the listen address, to 0.0.0.0:8080. It declares a volume at
# /var/lib/rethread for the file store: `-e RETHREAD_STORE=file:/var/lib/rethread -v
# rethread-data:/var/lib/rethread` keeps turns across restarts (the default store is memory).

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm

FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
# ring and zstd compile C code: use musl's compiler for the musl target.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p rethread --bin rethread
# The last check refuses a dynamically linked binary: a scratch image has no loader.
RUN mkdir -p /out/etc/ssl/certs /out/var/lib/rethread \
 && cp target/x86_64-unknown-linux-musl/release/rethread /out/rethread \
 && strip /out/rethread \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
 && echo 'rethread:x:65532:65532:rethread:/nonexistent:/sbin/nologin' > /out/etc/passwd \
 && echo 'rethread:x:65532:' > /out/etc/group \
 && chmod 0755 /out/rethread \
 && chmod 0644 /out/etc/passwd /out/etc/group /out/etc/ssl/certs/ca-certificates.crt \
 && chmod 0700 /out/var/lib/rethread \
 && ! readelf -l /out/rethread | grep -q 'Requesting program interpreter'

FROM scratch
COPY --from=builder /out/etc/passwd /etc/passwd
COPY --from=builder /out/etc/group /etc/group
COPY --from=builder /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/rethread /rethread
COPY --from=builder --chown=65532:65532 /out/var/lib/rethread /var/lib/rethread
VOLUME ["/var/lib/rethread"]
USER 65532:65532
ENV RETHREAD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `rethread health` asks http://127.0.0.1:<port of RETHREAD_LISTEN>/healthz; exit 0 when it answers 200.
# (Podman keeps HEALTHCHECK only with `--format docker`; the OCI format has no field for it.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/rethread", "health"]
# Where the source lives, for the org.opencontainers.image.source label: pass the real address
# with --build-arg SOURCE_URL=… (the default is a placeholder).
ARG SOURCE_URL=https://github.com/your-org/rethread
LABEL org.opencontainers.image.title="rethread" \
      org.opencontainers.image.description="A reverse proxy for the OpenAI Responses API that restores the items a follow-up request left out." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/rethread"]
