#!/usr/bin/env bash
# Fetches Debian sid's docker.io (Docker Engine 28.5) and unpacks it into a fixed cache folder,
# for the tests that run against a second Docker (`DockerVersion::Sid` in tests/src/docker.rs).
# Nothing is installed and the machine's apt configuration is left alone: apt reads a private
# sources list and keeps its lists and downloads in a private folder, which is removed again.
# The dockerd runs on bookworm's libc, containerd 1.6 and runc (tests/setup.sh installs those
# with bookworm's docker.io). Run as root. Idempotent: a cache whose dockerd answers
# `--version` is kept as it is.
#   ENFORCER_DOCKER28_DIR  the cache folder (default /var/cache/enforcer-tests/docker28);
#                          dockerd ends up at $ENFORCER_DOCKER28_DIR/usr/sbin/dockerd
set -euo pipefail
cache=${ENFORCER_DOCKER28_DIR:-/var/cache/enforcer-tests/docker28}
if "$cache/usr/sbin/dockerd" --version >/dev/null 2>&1; then
  exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "docker28.sh: $keyring is missing: apt-get install debian-archive-keyring" >&2; exit 1; }

mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$(dirname "$cache")/docker28-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt downloads as its _apt user: it must be able to write there.
chmod 755 "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/empty"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian sid main" >"$work/sources.list"
apt_private=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=$work/empty"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
             -o "Dir::Etc::Preferences=$work/empty/none" -o "Dir::Etc::PreferencesParts=$work/empty")
apt-get "${apt_private[@]}" -qq update
mkdir "$work/deb"
if id _apt >/dev/null 2>&1; then chown _apt "$work/deb"; fi
(cd "$work/deb" && apt-get "${apt_private[@]}" -qq download docker.io)
dpkg-deb -x "$work"/deb/docker.io_*.deb "$work/x"
version=$("$work/x/usr/sbin/dockerd" --version)
case "$version" in
  "Docker version 28."*) ;;
  *) echo "docker28.sh: sid's docker.io is no longer Docker 28 ($version): update the tests" >&2; exit 1 ;;
esac
# Into place in one rename: a cache folder is whole or absent.
rm -rf "$cache"
mv "$work/x" "$cache"
echo "docker28.sh: $version in $cache"
