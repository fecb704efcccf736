#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root, no stdin, on a clean clone):
# installs the Debian packages the tests need, checks formatting and lints, runs the unit
# tests, builds the binaries and runs the integration tests against real daemons.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the test suite must run as root (real mounts, namespaces, cgroups)" >&2; exit 1; }

packages=$(cat deploy/packages.txt deploy/test-packages.txt | grep -vE '^\s*(#|$)' | sort -u | tr '\n' ' ')
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "==> installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # shellcheck disable=SC2086
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> build"
cargo build --workspace --bins --locked
echo "==> unit tests"
cargo test --workspace --locked --exclude berth-integration-tests
echo "==> integration tests"
cargo test -p berth-integration-tests --locked -- --test-threads="${BERTH_TEST_THREADS:-2}"
