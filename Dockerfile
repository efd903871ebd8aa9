# syntax=docker/dockerfile:1
# Spark Gateway image: dependencies cached in their own layer (cargo-chef), a distroless runtime
# running as a non-root user, and a HEALTHCHECK through the binary itself (no curl in the image).

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.73 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The build's settings (jemalloc's compiled-in options) before the dependencies are built.
COPY .cargo .cargo
# Only the dependency graph: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json --bin spark-gateway
COPY . .
RUN cargo build --release --locked --bin spark-gateway \
    && install -D -m 0755 target/release/spark-gateway /out/spark-gateway

# glibc, CA certificates and a nonroot user (65532), nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/spark-gateway /app/spark-gateway
# No allocator settings: the binary brings jemalloc (src/main.rs).
ENV SPARK_BIND=0.0.0.0:8080 \
    SPARK_LOG_FORMAT=json
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/app/spark-gateway", "healthcheck"]
ENTRYPOINT ["/app/spark-gateway"]
CMD ["serve"]
