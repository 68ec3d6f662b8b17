# syntax=docker/dockerfile:1
# The gim-export image that deploy/cronjob.yaml runs:
#
#   docker build -t ghcr.io/OWNER/gim-export:0.1.0 .
#
# Two stages: the toolchain builds the release binary, and only that binary goes into a distroless
# runtime image (glibc, libgcc_s and CA certificates; no shell, no package manager), as user 65532.
#
# What the binary needs at run time: glibc and libgcc_s only. SQLite is compiled in (sqlx's `sqlite`
# feature turns on libsqlite3-sys's `bundled`, built here with the C compiler the rust image ships),
# deflate is pure Rust (zlib-rs), and the PostgreSQL client is sqlx's own (no libpq, no OpenSSL).
#
# No shell is a choice: the container's process is gim-export itself, so SIGTERM reaches it (it then
# finishes or abandons the folder in progress and records the run). The one thing that needs a shell
# is `--on-publish`, which runs its command with `sh -c`: a deployment that wants a hook builds its own
# image FROM this one's binary on a base that has `sh` and the hook's tools (rsync, curl, ...).

ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate downloads and the build between `docker build`s; the binary is
# copied out of the cached target directory because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gim-export \
 && install -D -m 0755 target/release/gim-export /out/gim-export

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gim-export /usr/local/bin/gim-export
# 65532 is distroless's `nonroot`; numeric so that `runAsNonRoot: true` can check it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gim-export"]
CMD ["--help"]
