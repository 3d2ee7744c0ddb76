#!/usr/bin/env bash
# Unpacks Debian's prometheus package (the server and promtool) into a fixed cache folder, for
# the test that scrapes `enforcer run --metrics-listen` with a real Prometheus
# (tests/tests/metrics.rs). Nothing is installed and no service starts: the package is only
# downloaded and unpacked (installing it would start a Prometheus on the machine). Run as root.
# Idempotent: a cache whose promtool answers `--version` is kept as it is.
#   ENFORCER_PROMETHEUS_DIR  the cache folder (default /var/cache/enforcer-tests/prometheus);
#                            the binaries end up in $ENFORCER_PROMETHEUS_DIR/usr/bin
set -euo pipefail
cache=${ENFORCER_PROMETHEUS_DIR:-/var/cache/enforcer-tests/prometheus}
if "$cache/usr/bin/promtool" --version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$(dirname "$cache")/prometheus-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt downloads as its _apt user: it must be able to write there.
chmod 755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
(cd "$work" && { apt-get -qq download prometheus 2>/dev/null || { apt-get update -qq && apt-get -qq download prometheus; }; })
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
"$work/x/usr/bin/promtool" --version >/dev/null
# Into place in one rename: a cache folder is whole or absent.
rm -rf "$cache"
mv "$work/x" "$cache"
echo "prometheus.sh: $("$cache/usr/bin/prometheus" --version 2>&1 | head -1) in $cache"
