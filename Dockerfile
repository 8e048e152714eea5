# stackline container image: one static binary and a CA bundle (for TLS to
# the backend) in an otherwise empty image.
#
# From source (needs a registry for the Go image):
#   docker build -t stackline .
# From a static binary built on the host (no registry; what `make image` and
# CI do): `make image-files` lays out bin/image/ as the build stage does, then
#   podman build --target from-host -t stackline .
# Both targets end in the same runtime stage, so they differ only in where
# the files of bin/image/ were built.
#
# The eBPF objects are committed, so no clang is needed. Running the image
# needs the host PID namespace and eBPF capabilities: see README.md
# ("Running in a container") and deploy/kubernetes/.

ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same recipe as `make image`: bin/image/ gets the static binary and
# the CA bundle, laid out as in the final image.
RUN make image-files VERSION="${VERSION}"

FROM scratch AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="stackline" \
	org.opencontainers.image.description="Whole-system eBPF CPU profiler for Linux that sends OTLP profiles" \
	org.opencontainers.image.source="https://github.com/stackline-dev/stackline" \
	org.opencontainers.image.licenses="Apache-2.0" \
	org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["/usr/local/bin/stackline"]

# The static binary and CA bundle from the host, laid out in bin/image/ by
# `make image-files`.
FROM runtime AS from-host
COPY bin/image/ /

# The default target: built from source in the build stage.
FROM runtime AS from-source
COPY --from=build /src/bin/image/ /
