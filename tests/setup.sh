#!/usr/bin/env bash
# Installs, from Debian's packages, what building enforcer and running its tests need on a
# fresh machine. Run as root. Idempotent.
#   libclang-dev   rustables generates its netlink bindings with bindgen at build time
#   nftables       nft: the tests' independent reader of the kernel's tables, and the benchmark
#   iproute2       ip: network namespaces, veths and bridges of the test hosts
#   procps         sysctl inside the test namespaces
#   util-linux     setpriv: the tests run enforcer without CAP_NET_ADMIN
#   coreutils      stdbuf: line-buffered nft monitor
#   docker.io      dockerd and docker: the real Docker Engine of the Docker tests (never started
#                  as a service here; the tests start a private one in a namespace)
#   iptables       Docker 20.10 writes its own rules with it
#   busybox-static the image of the test containers (imported, no registry needed)
#   tar            packs that image
#   systemd, init-system-helpers, binutils, gzip
#                  cargo xtask dist and its install check: systemd-analyze (unit score and
#                  verify), deb-systemd-helper (the .deb enables its unit), objdump (the glibc
#                  the binary needs), gzip (the man page)
#   strace         shows the agent makes no capset call under the unit's capabilities
#   debian-archive-keyring
#                  checks the signature of sid's lists, for the second Docker (below)
#   systemd-container, debootstrap
#                  tests/systemd-boot.sh: a Debian root with docker.io booted with
#                  systemd as PID 1 (systemd-nspawn), the .deb installed in it
# Then tests/docker28.sh unpacks Debian sid's dockerd (Engine 28.5) into
# /var/cache/enforcer-tests/docker28, for the tests that run against a second Docker; it leaves
# the machine's apt configuration alone and installs nothing; tests/prometheus.sh unpacks
# Debian's prometheus (the server and promtool) into /var/cache/enforcer-tests/prometheus,
# without installing it (its package would start a server), for tests/tests/metrics.rs.
set -euo pipefail
packages=(libclang-dev nftables iproute2 procps util-linux coreutils docker.io iptables busybox-static tar
          systemd init-system-helpers binutils gzip strace debian-archive-keyring
          systemd-container debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
"$(dirname "$0")/docker28.sh"
"$(dirname "$0")/prometheus.sh"
