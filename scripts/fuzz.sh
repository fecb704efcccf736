#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets/) for SECONDS (default 30) with cargo-fuzz and
# libFuzzer, installing cargo-fuzz first if it is missing. Exits non-zero if a target
# crashes (a panic, a failed property or a sanitizer report); the crashing input is left in
# fuzz/artifacts/<target>/. New inputs the fuzzer finds go to fuzz/target/corpus/<target>/
# (ignored by git); the committed seeds in fuzz/corpus/<target>/ are only read.
#
#   scripts/fuzz.sh [SECONDS]       all targets
#   FUZZ_TARGETS="crilog" scripts/fuzz.sh 60
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage instrumentation); the
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# layer_tar makes and removes a small temp tree per input: on tmpfs that is ~10x faster.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=/dev/shm
fi

targets="${FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list | tr "\n" " ")}"
echo "==> building the fuzz targets"
(cd fuzz && cargo fuzz build)

failed=()
for target in $targets; do
  echo "==> fuzzing $target for ${seconds}s"
  work="fuzz/target/corpus/$target"
  mkdir -p "$work" "fuzz/artifacts/$target"
  # libFuzzer writes new inputs to the first corpus directory and only reads the others.
  if ! (cd fuzz && cargo fuzz run "$target" "target/corpus/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1); then
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
    "RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <input> in fuzz/)" >&2
  exit 1
fi
echo "==> no crash in: $targets"
