#!/usr/bin/env bash
# Boots a Debian bookworm root (debootstrap, cached) with systemd as PID 1 in systemd-nspawn,
# with its own network namespace, the .deb of `cargo xtask dist` installed and a stand-in
# docker.service, and checks what the unit promises: the agent is started by systemd before
# docker.service, READY only after its first apply, the table in the kernel when docker.service
# starts, restarted after `kill -9`, SIGHUP on `systemctl reload`. Run as root after
# `cargo xtask dist`; the root tree stays cached, each run boots a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/dist/enforcer_*.deb)
cache=/var/cache/enforcer-tests/nspawn-bookworm
if [ ! -x "$cache/bin/systemctl" ]; then
    rm -rf "$cache.partial"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,nftables,iproute2 \
        bookworm "$cache.partial" http://deb.debian.org/debian
    mv "$cache.partial" "$cache"
fi
root=$(mktemp -d /var/tmp/enforcer-boot.XXXXXX)
trap 'rm -rf "$root"' EXIT
cp -a "$cache/." "$root/"
# Without a systemd on this machine, nspawn must neither register nor ask for a scope unit.
nspawn=(systemd-nspawn --quiet --register=no --keep-unit -D "$root")

cp "$deb" "$root/root/enforcer.deb"
"${nspawn[@]}" dpkg -i /root/enforcer.deb

# docker.service's stand-in records whether the table was in the kernel when it started.
cat > "$root/etc/systemd/system/docker.service" <<'UNIT'
[Unit]
Description=stand-in for Docker: records whether enforcer's table is there when it starts
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'nft list table inet enforcer >/dev/null 2>&1; echo $? > /var/log/docker-saw-table'
[Install]
WantedBy=multi-user.target
UNIT
cat > "$root/usr/local/bin/verify-enforcer" <<'SCRIPT'
#!/bin/sh
exec > /var/log/verify.log 2>&1
echo "active: $(systemctl is-active enforcer)"
echo "docker saw the table: $(cat /var/log/docker-saw-table)"
old=$(systemctl show -p MainPID --value enforcer)
kill -9 "$old"
for i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 1
    new=$(systemctl show -p MainPID --value enforcer)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && [ "$(systemctl is-active enforcer)" = active ] && break
done
echo "restarted: $old -> $new, $(systemctl show -p NRestarts enforcer)"
systemctl reload enforcer
sleep 2
echo "table: $(nft list tables | tr '\n' ' ')"
echo "--- journal"
journalctl -b -o short-monotonic --no-pager | grep -E 'enforcer|docker|Docker'
echo "--- end"
systemctl poweroff
SCRIPT
chmod +x "$root/usr/local/bin/verify-enforcer"
cat > "$root/etc/systemd/system/verify-enforcer.service" <<'UNIT'
[Unit]
Description=checks the enforcer unit, then powers off
After=enforcer.service docker.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/verify-enforcer
[Install]
WantedBy=multi-user.target
UNIT
"${nspawn[@]}" systemctl enable docker.service verify-enforcer.service
console="$root/var/log/boot-console"
timeout 180 "${nspawn[@]}" --boot --private-network > "$console" 2>&1 || true
log="$root/var/log/verify.log"
if [ ! -f "$log" ]; then
    cat "$console"
    echo "systemd boot check: the verifying unit left no log (the console is above)"
    exit 1
fi
cat "$log"

fail() { echo "systemd boot check: $*"; exit 1; }
grep -q '^active: active$' "$log" || fail "the unit is not active"
grep -q '^docker saw the table: 0$' "$log" || fail "docker.service started before the table was there"
grep -Eq '^restarted: [0-9]+ -> [0-9]+, NRestarts=1$' "$log" || fail "not restarted once after kill -9"
grep -q 'table: table inet enforcer' "$log" || fail "no table after the restart"
grep -q 'policy reloaded' "$log" || fail "systemctl reload did not reload the policy"
# READY=1 only after the first apply: systemd says the unit started after the agent's first
# `applied:` line, and docker.service starts after that.
applied=$(grep -n 'applied:' "$log" | head -1 | cut -d: -f1)
started=$(grep -n 'Started enforcer.service' "$log" | head -1 | cut -d: -f1)
docker=$(grep -n 'Starting docker.service' "$log" | head -1 | cut -d: -f1)
[ -n "$applied" ] && [ -n "$started" ] && [ -n "$docker" ] || fail "journal lines missing"
[ "$applied" -lt "$started" ] || fail "READY before the first apply"
[ "$started" -lt "$docker" ] || fail "docker.service started before enforcer was ready"
echo "systemd boot check: ok"
