# syntax=docker/dockerfile:1
#
# Image of the provider: built on Debian bookworm with the official Rust image, run on
# distroless "cc" (glibc, libgcc, CA certificates, tzdata; no shell, no package manager).
# The binary links glibc dynamically (aws-lc-sys compiles C), so "cc" rather than "static".
#
# Not built by this repository's CI: its machines have no container engine. Build with
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t akv-csi-provider:0.1.0 .
# Multi-arch (amd64 + arm64), one native compile per platform (QEMU emulates the foreign one;
# slow but no cross toolchain, which aws-lc-sys's C code would otherwise need):
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg GIT_COMMIT=$(git rev-parse HEAD) \
#     -t REGISTRY/akv-csi-provider:0.1.0 --push .
# Builder and runtime must share the Debian release (glibc): bump both ARGs together.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The provider crate declares its integration tests by path, so tests/ is needed to load the manifest.
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY proto proto
COPY provider provider
COPY tests tests
# Reproducible build date for --version (set it to the commit time in release pipelines).
ARG SOURCE_DATE_EPOCH=0
# The commit for --version and akv_build_info (.git is not copied into the build):
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) ...
ARG GIT_COMMIT=
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} \
    GIT_COMMIT=${GIT_COMMIT} \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin akv-csi-provider \
 && install -D -m 0755 target/release/akv-csi-provider /out/akv-csi-provider

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/akv-csi-provider /usr/local/bin/akv-csi-provider
# Non-root by default (distroless "nonroot", 65532). The Helm chart runs the container as UID 0
# with every capability dropped, because the socket directory on the nodes (a hostPath owned by
# root) must be writable; see deploy/README.md. The root filesystem can be read-only.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/akv-csi-provider"]
CMD ["--endpoint=unix:///provider/azure.sock"]
