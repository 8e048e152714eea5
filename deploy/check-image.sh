#!/usr/bin/env bash
# Checks a stackline image without running a container (CI's sandbox cannot):
# its entrypoint and labels, that it holds exactly the binary and the CA
# bundle, and that the binary is static and runs here.
# Usage: deploy/check-image.sh TOOL IMAGE VERSION   (TOOL: podman or docker)
set -euo pipefail
tool=$1 image=$2 version=$3
fail() { echo "check-image: $image: $*" >&2; exit 1; }

entrypoint=$("$tool" image inspect --format '{{json .Config.Entrypoint}}' "$image")
[ "$entrypoint" = '["/usr/local/bin/stackline"]' ] || fail "entrypoint is $entrypoint"
label() { "$tool" image inspect --format "{{index .Config.Labels \"$1\"}}" "$image"; }
[ "$(label org.opencontainers.image.title)" = stackline ] || fail "label org.opencontainers.image.title is not stackline"
[ "$(label org.opencontainers.image.version)" = "$version" ] || fail "label org.opencontainers.image.version is not $version"
[ -n "$(label org.opencontainers.image.source)" ] || fail "no label org.opencontainers.image.source"

dir=$(mktemp -d)
ctr=""
cleanup() {
	[ -z "$ctr" ] || "$tool" rm "$ctr" >/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
# create (not run) and export: the image's file system as a tar.
ctr=$("$tool" create "$image")
"$tool" export "$ctr" | tar -x -C "$dir"

files=$(cd "$dir" && find . -type f -o -type l | sort | tr '\n' ' ')
[ "$files" = "./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/stackline " ] || fail "unexpected files: $files"
grep -q 'BEGIN CERTIFICATE' "$dir/etc/ssl/certs/ca-certificates.crt" || fail "CA bundle has no certificate"
bin=$dir/usr/local/bin/stackline
if readelf -lW "$bin" | grep -q INTERP; then
	fail "usr/local/bin/stackline is dynamically linked (needs CGO_ENABLED=0)"
fi
out=$("$bin" --version) || fail "usr/local/bin/stackline --version failed"
[ "$out" = "stackline $version" ] || fail "--version printed \"$out\", want \"stackline $version\""
echo "check-image: $image: entrypoint, labels, files, static binary ($out): ok"
