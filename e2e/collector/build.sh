#!/usr/bin/env bash
# Builds the OpenTelemetry Collector described by builder-config.yaml with
# the official builder (ocb) and prints the binary's path on stdout.
#
# The binary lands outside the repository, in
# $STACKLINE_OTELCOL_CACHE/otelcol-<hash>/otelcol (default cache:
# /var/cache/stackline), where <hash> covers the manifest, this script and
# the Go version; a binary already there is reused. Progress goes to stderr.
#
# The builder's own `go mod tidy` fails: a test-only dependency of the file
# exporter (otlpencodingextension v0.165.1) is not on the module proxy. So
# the builder only writes the sources (--skip-compilation; it exits non-zero
# after writing them) and this script tidies with -e and builds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
manifest=$here/builder-config.yaml
builder=go.opentelemetry.io/collector/cmd/builder@v0.165.0
export PATH=/usr/local/go/bin:$PATH

goversion=$(go env GOVERSION)
hash=$( { cat "$manifest" "$0"; echo "$goversion $(go env GOOS)/$(go env GOARCH)"; } | sha256sum | cut -c1-16)
cache=${STACKLINE_OTELCOL_CACHE:-/var/cache/stackline}
dest=$cache/otelcol-$hash
bin=$dest/otelcol

if [ -x "$bin" ]; then
	echo "otelcol: reusing $bin" >&2
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.otelcol-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# The manifest with the output path pointing into the work directory.
sed "s|^dist:\$|dist:\n  output_path: $work/src|" "$manifest" >"$work/manifest.yaml"
echo "otelcol: generating sources with $builder ($goversion)" >&2
(cd "$work" && go run "$builder" --config manifest.yaml --skip-compilation) >"$work/builder.log" 2>&1 || true
if [ ! -f "$work/src/go.mod" ] || [ ! -f "$work/src/components.go" ]; then
	cat "$work/builder.log" >&2
	echo "otelcol: the builder wrote no sources" >&2
	exit 1
fi

echo "otelcol: go mod tidy -e, go build" >&2
(cd "$work/src" && go mod tidy -e >"$work/tidy.log" 2>&1 || { cat "$work/tidy.log" >&2; exit 1; })
(cd "$work/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -trimpath -o "$work/otelcol" .)
"$work/otelcol" --version >&2

# Rename into place so that a concurrent build or reader never sees a
# partial binary.
mkdir -p "$dest"
mv "$work/otelcol" "$bin.tmp.$$"
mv "$bin.tmp.$$" "$bin"
echo "otelcol: built $bin in $((SECONDS - start))s" >&2
echo "$bin"
