#!/usr/bin/env bash
# Installs Berth on this machine and runs the main job, offline:
#   * the Debian packages the engine needs at run time (deploy/packages.txt),
#   * release builds of berthd, berth and berth-shim into /usr/local/bin,
#   * /etc/berth/config.toml (kept if present) and the systemd units,
#   * starts berthd (systemd when it is PID 1, otherwise in the background),
#   * prints `berth info`,
#   * imports a busybox image made from Debian's busybox-static (no registry needed) and
#     runs `berth run --rm busybox echo hello`.
# Usage: sudo deploy/install.sh [--no-start]
set -euo pipefail
cd "$(dirname "$0")/.."
START=1
for arg in "$@"; do
  case $arg in
    --no-start) START=0 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh must run as root (it installs packages and starts berthd)" >&2; exit 1; }

packages=$(grep -vE '^\s*(#|$)' deploy/packages.txt | tr '\n' ' ')
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "==> installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # shellcheck disable=SC2086
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
fi

echo "==> building release binaries"
cargo build --release --locked -q -p berthd -p berth-cli
# The shim runs once per container: its own size-optimized profile (see Cargo.toml).
cargo build --profile shim --locked -q -p berth-shim
install -m 0755 target/release/berthd target/release/berth target/shim/berth-shim /usr/local/bin/

getent group berth >/dev/null || groupadd --system berth
install -d -m 0755 /etc/berth
[ -f /etc/berth/config.toml ] || install -m 0644 deploy/config.toml /etc/berth/config.toml
if [ -d /etc/systemd/system ]; then
  install -m 0644 deploy/berthd.service deploy/berthd.socket /etc/systemd/system/
fi

[ "$START" = 1 ] || exit 0

socket=/run/berth/berth.sock
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl daemon-reload
  systemctl enable --now berthd.socket berthd.service
elif ! berth -H "unix://$socket" version >/dev/null 2>&1; then
  echo "==> starting berthd (no systemd here; log: /var/log/berth/berthd.log)"
  mkdir -p /var/log/berth
  setsid nohup /usr/local/bin/berthd --config /etc/berth/config.toml \
    >>/var/log/berth/berthd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 100); do
  berth version >/dev/null 2>&1 && break
  sleep 0.1
done
berth info

# The main job: an image built offline from busybox-static, and a container from it.
if ! berth image inspect busybox >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs"/{bin,etc,root,tmp,proc,sys,dev,var,run}
  chmod 1777 "$rootfs/tmp"
  install -m 0755 /bin/busybox "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  tar --numeric-owner -C "$rootfs" -c . | berth import -c 'CMD ["sh"]' -m "busybox-static from Debian" - busybox
fi
berth run --rm busybox echo hello
