#!/usr/bin/env bash
# jdk21.sh fetches OpenJDK 21 (Debian trixie's openjdk-21-jre-headless) and
# the trixie C library, C++ runtime and dynamic loader it needs (glibc 2.38
# or later, newer than bookworm's) from deb.debian.org with apt-get, unpacks
# them into one directory and prints the command that runs java there, the
# loader first:
#
#   <root>/lib64/ld-linux-x86-64.so.2 --library-path <dirs> <root>/.../bin/java
#
# It is idempotent: a second run downloads nothing and prints the same line.
# The cache is /var/cache/stackline/jdk21, or $STACKLINE_JDK21_CACHE.
set -euo pipefail

cache=${STACKLINE_JDK21_CACHE:-/var/cache/stackline/jdk21}
root=$cache/root
jhome=$root/usr/lib/jvm/java-21-openjdk-amd64
loader=$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libpath=$root/usr/lib/x86_64-linux-gnu:$jhome/lib:$jhome/lib/server

print() {
	echo "$loader --library-path $libpath $jhome/bin/java"
}

if [ -x "$jhome/bin/java" ] && [ -e "$loader" ] && [ -f "$cache/done" ]; then
	print
	exit 0
fi

apt=$cache/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$cache/debs"
keyring=/usr/share/keyrings/debian-archive-trixie-stable.gpg
[ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
opts=(
	-o "Dir::Etc::sourcelist=$apt/sources.list"
	-o "Dir::Etc::sourceparts=-"
	-o "Dir::State::lists=$apt/lists"
	-o "Dir::Cache=$apt/cache"
	-o "Dir::State::status=/dev/null"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures=amd64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)
apt-get "${opts[@]}" -qq update >&2
# The JRE and the shared libraries its launcher and libjvm link that the
# host's (bookworm) versions cannot satisfy.
pkgs=(openjdk-21-jre-headless libc6 libstdc++6 libgcc-s1 zlib1g)
(cd "$cache/debs" && apt-get "${opts[@]}" -qq download "${pkgs[@]}" >&2)
rm -rf "$root.tmp"
mkdir -p "$root.tmp"
for deb in "$cache"/debs/*.deb; do
	dpkg-deb -x "$deb" "$root.tmp"
done
rm -rf "$root"
mv "$root.tmp" "$root"
# Debian's java is a link farm into /etc/java-21-openjdk for the
# configuration files; the package ships them under etc/ of the root.
if [ -d "$root/etc/java-21-openjdk" ]; then
	for l in "$jhome"/conf "$jhome"/lib/security/cacerts; do
		[ -L "$l" ] || continue
		t=$(readlink "$l")
		case $t in /etc/*) ln -sfn "$root$t" "$l" ;; esac
	done
	find "$jhome/conf" -type l 2>/dev/null | while read -r l; do
		t=$(readlink "$l")
		case $t in /etc/*) ln -sfn "$root$t" "$l" ;; esac
	done
fi
"$loader" --library-path "$libpath" "$jhome/bin/java" -version >&2
touch "$cache/done"
print
