#!/usr/bin/env bash
# Boots a Debian bookworm root (debootstrap, cached) with systemd as PID 1 in systemd-nspawn,
# with its own network namespace, Debian's docker.io (20.10) and the .deb of `cargo xtask dist`
# installed, and checks what the unit promises: the agent is started by systemd before
# docker.service, READY only after its first apply, the table in the kernel when dockerd
# starts, the real dockerd followed (a network and a container enforced), restarted after
# `kill -9`, SIGHUP on `systemctl reload`. Run as root after `cargo xtask dist`; the root tree
# stays cached, each run boots a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/dist/enforcer_*.deb)
cache=/var/cache/enforcer-tests/nspawn-bookworm-docker
if [ ! -x "$cache/usr/sbin/dockerd" ]; then
    rm -rf "$cache.partial"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,nftables,iproute2,docker.io \
        bookworm "$cache.partial" http://deb.debian.org/debian
    mv "$cache.partial" "$cache"
fi
root=$(mktemp -d /var/tmp/enforcer-boot.XXXXXX)
# dockerd's containers get cgroups under /enforcer-boot of the host's (shared) v1 hierarchies.
cleanup() {
    rm -rf "$root"
    find /sys/fs/cgroup/*/enforcer-boot -depth -type d -exec rmdir {} + 2>/dev/null || true
}
trap cleanup EXIT
cp -a "$cache/." "$root/"
# Without a systemd on this machine, nspawn must neither register nor ask for a scope unit.
nspawn=(systemd-nspawn --quiet --register=no --keep-unit -D "$root")

cp "$deb" "$root/root/enforcer.deb"
"${nspawn[@]}" dpkg -i /root/enforcer.deb

# Debian's docker.service, with a drop-in that records whether enforcer's table was in the
# kernel when it started; vfs, since overlayfs on this root's file system may not nest.
mkdir -p "$root/etc/docker" "$root/etc/systemd/system/docker.service.d"
echo '{"storage-driver": "vfs", "cgroup-parent": "/enforcer-boot"}' > "$root/etc/docker/daemon.json"
cat > "$root/etc/systemd/system/docker.service.d/saw-table.conf" <<'UNIT'
[Service]
ExecStartPre=/bin/sh -c 'nft list table inet enforcer >/dev/null 2>&1; echo $? > /var/log/docker-saw-table'
UNIT
# The container image: the host's static busybox.
mkdir -p "$root/root/image/bin"
cp "$(command -v busybox)" "$root/root/image/bin/busybox"
ln -s busybox "$root/root/image/bin/sh"
ln -s busybox "$root/root/image/bin/sleep"
cat > "$root/usr/local/bin/verify-enforcer" <<'SCRIPT'
#!/bin/sh
exec > /var/log/verify.log 2>&1
echo "active: $(systemctl is-active enforcer)"
echo "docker saw the table: $(cat /var/log/docker-saw-table)"
for i in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
echo "dockerd: $(docker version --format '{{.Server.Version}}')"
# nspawn mounts the cgroup v1 controllers read-only; runc needs to write them.
for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$c"; done
docker network create --internal --subnet 10.77.0.0/24 boxnet >/dev/null
tar -C /root/image -c . | docker import - busybox >/dev/null
docker run -d --name box --network boxnet busybox /bin/sleep 600 >/dev/null
address=$(docker inspect -f '{{.NetworkSettings.Networks.boxnet.IPAddress}}' box)
echo "box: $(docker inspect -f '{{.State.Status}}' box) at $address"
for i in $(seq 1 50); do
    nft list ruleset | grep -q "$address" && break
    sleep 0.1
done
echo "subnet in the table: $(nft list table inet enforcer | grep -c '10.77.0.0')"
echo "box's address in the table: $(nft list ruleset | grep -c "$address")"
# dockerd frozen: the restarted agent cannot read Docker, only its state file.
dockerd=$(systemctl show -p MainPID --value docker)
kill -STOP "$dockerd"
old=$(systemctl show -p MainPID --value enforcer)
kill -9 "$old"
for i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 1
    new=$(systemctl show -p MainPID --value enforcer)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && [ "$(systemctl is-active enforcer)" = active ] && break
done
echo "restarted: $old -> $new, $(systemctl show -p NRestarts enforcer)"
sleep 1
echo "box's address in the table, dockerd frozen: $(nft list ruleset | grep -c "$address")"
kill -CONT "$dockerd"
systemctl reload enforcer
sleep 2
echo "table: $(nft list tables | tr '\n' ' ')"
docker rm -f box >/dev/null
echo "--- journal"
journalctl -b -o short-monotonic --no-pager | grep -E 'enforcer|docker|Docker' | grep -v 'dockerd.*level=info'
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
# runc joins a session keyring, which nspawn's default syscall filter refuses.
timeout 180 "${nspawn[@]}" --boot --private-network \
    --system-call-filter="add_key keyctl request_key" > "$console" 2>&1 || true
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
grep -q '^dockerd: 20\.10' "$log" || fail "Debian's dockerd did not answer"
grep -q '^box: running at 10\.77\.0\.' "$log" || fail "the container did not run"
grep -q '^subnet in the table: [1-9]' "$log" || fail "the agent did not enforce Docker's network"
grep -q "^box's address in the table: [1-9]" "$log" || fail "the agent did not enforce the container"
grep -q "^box's address in the table, dockerd frozen: [1-9]" "$log" ||
    fail "the restarted agent did not re-enforce the container from its state file"
grep -q 're-enforcing the Docker state last applied' "$log" ||
    fail "the restarted agent did not read its state file"
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
