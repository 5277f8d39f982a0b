# The operator image: a static musl binary on a distroless base (non-root, no shell).
# Not built by CI here (no container engine on the build machines); `docker build .` elsewhere.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --target x86_64-unknown-linux-musl && \
    cp target/x86_64-unknown-linux-musl/release/rewind /rewind

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /rewind /usr/local/bin/rewind
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rewind"]
CMD ["run"]
