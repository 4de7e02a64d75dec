#!/usr/bin/env bash
# The server under deploy/systemd/sfu.service, started by a real systemd, on a machine
# whose init is not systemd: systemd runs as PID 1 of private namespaces (mount, PID,
# network, cgroup, UTS, IPC) whose root is an overlay of / on a tmpfs, so whatever it
# does at boot (tmpfiles cleaning /tmp, the journal, units' files) lands in the overlay
# and never on the machine; /dev, /run and /tmp are its own, /sys and /proc/sys
# read-only, and its cgroups live under one cgroup made here and removed at the end.
#
# It checks that the unit's hardening lets the server run (DynamicUser, the system call
# filter, MemoryDenyWriteExecute, RestrictAddressFamilies, ProtectSystem=strict, ...):
# Type=notify reaches "active" with the status "serving"; /healthz answers; watchdog pings
# keep it alive past WatchdogSec; `systemctl stop` drains and it exits 0.
#
# One part of the unit is not exercised: under this namespace's systemd (252), a
# credential of LoadCredential= is not readable by the service's user (its ACL is never
# applied; the same with a static User= and no hardening, so not the unit's doing), so
# the test's drop-in hands the secret as a file the service may read instead.
#
# Usage: systemd-ns.sh SFU_BIN. Exits 0 when the checks pass, 1 when one fails, 77 when
# this machine cannot host it (no cgroup v2, no overlayfs), saying why.
set -euo pipefail

if [ "${1:-}" = inner ]; then
  # --- Inside the namespaces: build the root, then become systemd. ---
  work=$2
  [ -d "$work/mnt" ] || exit 1
  mount --make-rprivate /
  mount -t tmpfs -o mode=755 tmpfs "$work/mnt"
  mkdir -p "$work/mnt/upper" "$work/mnt/work" "$work/mnt/root"
  r=$work/mnt/root
  mount -t overlay overlay -o "lowerdir=/,upperdir=$work/mnt/upper,workdir=$work/mnt/work" "$r"
  mount -t proc proc "$r/proc"
  mount --bind "$r/proc/sys" "$r/proc/sys"
  mount -o remount,bind,ro "$r/proc/sys"
  mount -t sysfs -o ro sysfs "$r/sys"
  mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
  # /dev: a few nodes in the overlay itself (systemd's PrivateDevices= wants /dev in the
  # root file system), never the machine's devtmpfs.
  rm -rf "${r:?}/dev" && mkdir -m 755 "$r/dev" "$r/dev/shm" "$r/dev/pts"
  for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$node"
    mknod -m 666 "$r/dev/$name" c "$major" "$minor"
  done
  ln -s /proc/self/fd "$r/dev/fd"
  mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
  mount -t tmpfs -o mode=755 tmpfs "$r/run"
  mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
  # The server, its config and secret, the unit as shipped and the test's drop-in.
  t=$r/opt/sfu-test
  mkdir -p "$t" "$r/etc/systemd/system/sfu.service.d"
  cp "$work/sfu" "$t/sfu"
  cp deploy/sfu.example.toml "$t/sfu.toml"
  head -c 32 /dev/urandom | base64 >"$t/secret"
  chmod 600 "$t/secret"
  install -m 0644 "$t/secret" "$t/secret-for-test"
  sed -e "s#^ExecStart=/usr/local/bin/sfu #ExecStart=/opt/sfu-test/sfu #" \
    -e "s#--config /etc/sfu/sfu.toml#--config /opt/sfu-test/sfu.toml#" \
    -e "s#^LoadCredential=secret:/etc/sfu/secret#LoadCredential=secret:/opt/sfu-test/secret#" \
    deploy/systemd/sfu.service >"$r/etc/systemd/system/sfu.service"
  cp "$work/test.conf" "$r/etc/systemd/system/sfu.service.d/test.conf"
  printf '[Unit]\nDescription=The SFU unit alone\nAllowIsolate=yes\nWants=sfu.service\n' \
    >"$r/etc/systemd/system/sfu-test.target"
  cd "$r"
  mkdir -p old-root
  pivot_root . old-root
  cd /
  umount -l /old-root
  export container=sfu-test
  exec setpriv --bounding-set -sys_module,-sys_time,-sys_boot,-sys_rawio,-syslog \
    /lib/systemd/systemd --system --unit=sfu-test.target
fi

# --- Outside: set up, run the checks, tear down. ---
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
bin=$(realpath "$1")
say() { echo "deploy/test/systemd-ns: $*" >&2; }
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  cgroot=/sys/fs/cgroup
elif [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup/unified)" = cgroup2fs ]; then
  cgroot=/sys/fs/cgroup/unified
else
  say "cannot run: no cgroup v2 hierarchy for a systemd to run in"
  exit 77
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
if ! grep -qw overlay /proc/filesystems; then
  say "cannot run: no overlayfs for a throwaway root"
  exit 77
fi

work=$(mktemp -d)
cg=$cgroot/sfu-systemd-test-$$
runner=
sd=
cleanup() {
  [ -n "$sd" ] && kill -9 "$sd" 2>/dev/null || true
  [ -n "$runner" ] && wait "$runner" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -d "$cg" ] || break
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.1
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$cg"
cp "$bin" "$work/sfu"
# The test's drop-in: the address to advertise in an empty network namespace, a
# watchdog of 4 s (pings every 2 s) so that a missed ping shows within the test, and the
# secret as a readable file (above: the credential's copy is not readable here).
printf '%s\n' '[Service]' 'Environment=SFU_ADVERTISE_IP=127.0.0.1' 'WatchdogSec=4' \
  'Environment=SFU_SECRET_FILE=/opt/sfu-test/secret-for-test' >"$work/test.conf"
(
  echo "$BASHPID" >"$cg/cgroup.procs"
  exec unshare --mount --pid --net --cgroup --uts --ipc --fork bash "$self" inner "$work"
) >"$work/systemd.log" 2>&1 &
runner=$!
in_ns() { nsenter -t "$sd" -a "$@"; }
fail() {
  say "FAILED: $*"
  [ -n "$sd" ] && in_ns journalctl -u sfu --no-pager -o cat 2>/dev/null | tail -n 15 >&2
  tail -n 5 "$work/systemd.log" >&2
  exit 1
}
# The runner's process is unshare; its child becomes systemd.
for _ in $(seq 100); do
  sd=$(pgrep -P "$runner" -x systemd || true)
  [ -n "$sd" ] && break
  sleep 0.2
done
[ -n "$sd" ] || fail "systemd did not start in the namespaces"

state=
for _ in $(seq 150); do
  state=$(in_ns systemctl show sfu -p ActiveState --value 2>/dev/null || true)
  [ "$state" = active ] || [ "$state" = failed ] && break
  sleep 0.2
done
[ "$state" = active ] || fail "sfu.service is $state, not active"
status=$(in_ns systemctl show sfu -p StatusText --value)
[ "$status" = serving ] || fail "status '$status', not the server's READY=1 'serving'"
code=$(in_ns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz || true)
[ "$code" = 200 ] || fail "/healthz answered $code under the unit"
say "systemd $(in_ns systemctl --version | head -n1 | cut -d' ' -f2) started the server under" \
  "the unit: active (Type=notify, READY=1), status '$status', /healthz 200"

started=$(in_ns systemctl show sfu -p ExecMainStartTimestampMonotonic --value)
sleep 6
restarts=$(in_ns systemctl show sfu -p NRestarts --value)
pinged=$(in_ns systemctl show sfu -p WatchdogTimestampMonotonic --value)
[ "$(in_ns systemctl show sfu -p ActiveState --value)" = active ] && [ "$restarts" = 0 ] ||
  fail "the watchdog (4 s) restarted the server ($restarts restarts)"
[ "$pinged" -gt "$started" ] || fail "no watchdog ping reached systemd"
say "watchdog: last ping $(((pinged - started) / 1000)) ms after the start; alive after 6 s of WatchdogSec=4"

before=$(date +%s%N)
in_ns systemctl stop sfu
took=$((($(date +%s%N) - before) / 1000000))
result=$(in_ns systemctl show sfu -p Result --value)
exit_status=$(in_ns systemctl show sfu -p ExecMainStatus --value)
[ "$result" = success ] && [ "$exit_status" = 0 ] || fail "stop: result $result, exit $exit_status"
in_ns journalctl -u sfu --no-pager -o cat | grep -q "SIGTERM: draining" || fail "no drain on stop"
say "systemctl stop: SIGTERM drained the empty server in $took ms, exit 0"
