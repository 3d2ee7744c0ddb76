#!/usr/bin/env bash
# Installs the .deb that `cargo xtask dist` made on this machine, checks what an operator gets,
# and purges it again (also when a check fails). Run as root after `cargo xtask dist`.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/dist/enforcer_*.deb)
dpkg -i "$deb"
trap 'dpkg -P enforcer >/dev/null' EXIT

# The unit is installed and enabled, and systemd accepts it.
test -f /lib/systemd/system/enforcer.service
test -L /etc/systemd/system/multi-user.target.wants/enforcer.service
systemd-analyze verify /lib/systemd/system/enforcer.service
# The man page and completions are where man and the shells look.
test -f /usr/share/man/man1/enforcer.1.gz
test -f /usr/share/bash-completion/completions/enforcer
# The references travel with the package.
test -f /usr/share/doc/enforcer/docs/policy.md

# The installed binary does its job: a dry run on the embedded default policy prints the nft
# script (exit 1: changes pending, as on a machine without the table; 0 if it is there).
status=0
/usr/bin/enforcer apply --dry-run > /tmp/enforcer-deb-dry-run.nft || status=$?
[ "$status" -le 1 ] || { echo "installed enforcer apply --dry-run exited $status"; exit 1; }
grep -q "table inet enforcer" /tmp/enforcer-deb-dry-run.nft
rm -f /tmp/enforcer-deb-dry-run.nft
echo "deb install check: ok"
