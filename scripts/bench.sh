#!/usr/bin/env bash
# Berth next to its peers, measured in the same run; prints one table with ratios.
#
#   sudo scripts/bench.sh [--quick] [--only run,pull,mem,api,events] [--no-peers] [--no-docker]
#                         [--no-crun] [--no-build] [--runs N] [--pull-runs N] [--mem-n N]
#                         [--ps-n N] [--clients N] [--per-client N] [--out DIR]
#
# Sections (each: Berth first, then the peers through ../shared/bench/anchors/bench.sh --only X)
#   run    `run --rm busybox true` latency, p50/p95 (hyperfine, --runs, default 30): berth vs
#          bare runc/crun bundle, ctr, podman, docker (+ the unshare/chroot floors)
#   pull   pull + unpack of 127.0.0.1:5000/multilayer (5 layers) with the image and its content
#          removed between runs (--pull-runs, default 5): berth vs skopeo (fetch only), ctr,
#          podman, docker
#   mem    --mem-n (default 50) detached `sleep 1000` containers: daemon growth per container,
#          each shim, their sum, idle daemon; wall time of the 50 detached starts
#   api    `berth ps -a` latency with 0 and --ps-n (default 1000) created containers;
#          --clients (20) concurrent clients each doing --per-client (20) `run -d` + `rm -f`
#   events integration-tests/benches/events.rs: publish rates, fan-out latency, 50 subscribers
#
# Berth runs as release binaries (target/release/{berthd,berth}, the shim from --profile shim,
# as deploy/install.sh builds them) against a berthd started here with its own temp root,
# state, log dir and socket. Peers and the registry (127.0.0.1:5000) come from the anchors
# scripts. All traffic stays on 127.0.0.1. Results: bench-results/<timestamp>/ in the repo
# (results.json, table.md, table.txt, env.txt, the raw hyperfine JSON and the anchors' output).
# Everything started here is stopped at exit; containers, shims and mounts are checked for.
# Numbers are printed, never asserted: the machine is shared and noisy, compare inside a run.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ANCHORS=${BERTH_BENCH_ANCHORS:-$REPO/../shared/bench/anchors}

RUNS=30; PULL_RUNS=5; MEMN=50; PSN=1000; CLIENTS=20; PER_CLIENT=20; PS_RUNS=20
ONLY=run,pull,mem,api,events; PEERS=1; DOCKER=1; CRUN=1; BUILD=1; QUICK=0
OUT_ROOT=${BERTH_BENCH_RESULTS:-$REPO/bench-results}
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1; RUNS=5; PULL_RUNS=2; MEMN=5; PSN=50; CLIENTS=4; PER_CLIENT=3; PS_RUNS=5;;
    --only) ONLY=$2; shift;;
    --no-peers) PEERS=0;; --no-docker) DOCKER=0;; --no-crun) CRUN=0;; --no-build) BUILD=0;;
    --runs) RUNS=$2; shift;; --pull-runs) PULL_RUNS=$2; shift;; --mem-n) MEMN=$2; shift;;
    --ps-n) PSN=$2; shift;; --clients) CLIENTS=$2; shift;; --per-client) PER_CLIENT=$2; shift;;
    --out) OUT_ROOT=$2; shift;;
    -h|--help) sed -n 2,26p "$0"; exit 0;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2;;
  esac; shift
done
want() { case ",$ONLY," in *",$1,"*) return 0;; esac; return 1; }

[ "$(id -u)" = 0 ] || { echo "bench.sh must run as root (mounts, namespaces, cgroups)" >&2; exit 1; }
[ -x "$ANCHORS/bench.sh" ] || { echo "anchors scripts not found at $ANCHORS" >&2; exit 1; }
for t in hyperfine jq runc skopeo umoci docker-registry; do
  command -v $t >/dev/null || { echo "missing $t: run $ANCHORS/setup.sh" >&2; exit 1; }
done
# rss_kib, pss_kib, sum_rss, sum_pss; $REG (the loopback registry) and $BASE (anchors' state)
# shellcheck source=/dev/null
. "$ANCHORS/lib.sh"

TS=$(date +%Y%m%dT%H%M%S)
OUT=$OUT_ROOT/$TS; mkdir -p "$OUT"
LOG=$OUT/bench.log; : > "$LOG"
ROWS=$OUT/rows.jsonl; : > "$ROWS"
say() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }

# ---- build --------------------------------------------------------------------------------
cd "$REPO" || exit 1
if [ $BUILD = 1 ]; then
  say "building release binaries (cargo waits for other builds on the same target dir)"
  cargo build --release --locked -q --bins >>"$LOG" 2>&1 || { say "release build failed (see $LOG)"; exit 1; }
  cargo build --profile shim --locked -q -p berth-shim >>"$LOG" 2>&1 || { say "shim build failed"; exit 1; }
  if want events; then
    cargo bench --locked -q -p berth-integration-tests --bench events --no-run --message-format=json \
      2>>"$LOG" | jq -r 'select(.executable != null and .target.name == "events") | .executable' \
      > "$OUT/events-bench-path" || { say "events bench build failed"; exit 1; }
  fi
fi
BIN=$REPO/target/release
SHIM=$REPO/target/shim/berth-shim
for f in "$BIN/berthd" "$BIN/berth" "$SHIM"; do
  [ -x "$f" ] || { say "missing $f (build: cargo build --release --bins; cargo build --profile shim -p berth-shim)"; exit 1; }
done

# ---- state and cleanup --------------------------------------------------------------------
WORK=$(mktemp -d /tmp/berth-bench-XXXXXX)     # short: unix socket paths are limited
SOCK=$WORK/state/berth.sock
BERTHD_PID=""
REGISTRY_STARTED=0
CLIENT_PIDS=()
B() { "$BIN/berth" -H "unix://$SOCK" "$@"; }

shims() { pgrep -f "^$SHIM .*$WORK/" | tr '\n' ' '; }
berthd_alive() { [ -n "$BERTHD_PID" ] && kill -0 "$BERTHD_PID" 2>/dev/null; }
remove_all() {   # every Berth container, in batches
  berthd_alive || return 0
  B ps -aq --no-trunc 2>/dev/null | xargs -r -n 50 "$BIN/berth" -H "unix://$SOCK" rm -f >/dev/null 2>>"$LOG"
}
start_berthd() {
  mkdir -p "$WORK/root" "$WORK/state" "$WORK/logs"
  BERTH_SHIM_BINARY=$SHIM RUST_LOG=${BERTH_BENCH_LOG:-warn} setsid "$BIN/berthd" --config "$WORK/config.toml" \
    >>"$WORK/berthd.log" 2>&1 </dev/null &
  BERTHD_PID=$!
  for _ in $(seq 1 300); do
    B version >/dev/null 2>&1 && return 0
    berthd_alive || break
    sleep 0.1
  done
  say "berthd did not come up; log:"; tail -20 "$WORK/berthd.log" >&2; return 1
}
stop_berthd() {
  berthd_alive || { BERTHD_PID=""; return 0; }
  kill -TERM "$BERTHD_PID"
  for _ in $(seq 1 200); do berthd_alive || break; sleep 0.1; done
  berthd_alive && kill -KILL "$BERTHD_PID"
  wait "$BERTHD_PID" 2>/dev/null; BERTHD_PID=""
}
mounts_below() { awk -v d="$1/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo; }
cleanup() {
  set +e
  for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  remove_all
  stop_berthd
  # What a crashed daemon could leave: shims (by PID, only ours), runc containers, mounts.
  local left_shims left_mounts p c
  left_shims=$(shims)
  for p in $left_shims; do kill -KILL "$p" 2>/dev/null; done
  if [ -d "$WORK/state/runc/default" ]; then
    for c in $(runc --root "$WORK/state/runc/default" list -q 2>/dev/null); do
      runc --root "$WORK/state/runc/default" delete -f "$c" >/dev/null 2>&1; done
  fi
  left_mounts=$(mounts_below "$WORK" | wc -l)
  mounts_below "$WORK" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  echo "cleanup: killed leftover shims [${left_shims}], unmounted $left_mounts mounts;" \
       "mounts under $WORK now: $(mounts_below "$WORK" | wc -l)" | tee -a "$LOG" >&2
  [ -s "$WORK/berthd.log" ] && cp "$WORK/berthd.log" "$OUT/berthd.log"
  [ -z "$(mounts_below "$WORK")" ] && rm -rf "$WORK"
  [ $REGISTRY_STARTED = 1 ] && "$ANCHORS/registry.sh" stop >/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- rows and the table -------------------------------------------------------------------
# A row: section (rows of one section are compared with its Berth row), benchmark, engine,
# whether it is Berth's, the number of samples, a note, and metrics [{name, value, unit}].
row() { # section benchmark engine is_berth n note metrics-json
  jq -nc --arg s "$1" --arg b "$2" --arg e "$3" --argjson ref "$4" --arg n "$5" --arg note "$6" \
    --argjson m "$7" '{section:$s, benchmark:$b, engine:$e, berth:$ref, n:($n|tonumber? // null),
                       note:$note, metrics:$m}' >> "$ROWS"
}
failed_row() { row "$1" "$2" "$3" "$4" "" "FAILED: $5" '[]'; }
# hyperfine JSON -> p50/p95 (p95 by nearest rank over the `times` array), scaled to ms or s
hf_metrics() { # json unit(ms|s)
  jq -c --arg u "$2" '.results[0] | (if $u == "ms" then 1000 else 1 end) as $k | (.times | sort) as $t
    | [{name:"p50", value:(.median*$k), unit:$u},
       {name:"p95", value:($t[(($t|length)*0.95|ceil) - 1]*$k), unit:$u}]' "$1"
}
hf_n() { jq '.results[0].times | length' "$1"; }
hf_row() { # section benchmark engine is_berth json unit note
  if [ -s "$5" ]; then row "$1" "$2" "$3" "$4" "$(hf_n "$5")" "$7" "$(hf_metrics "$5" "$6")"
  else failed_row "$1" "$2" "$3" "$4" "${7:-no result}"; fi
}
m() { # name value unit ... -> metrics JSON
  local out='[]'
  while [ $# -ge 3 ]; do
    out=$(jq -c --arg n "$1" --arg v "$2" --arg u "$3" '. + [{name:$n, value:($v|tonumber), unit:$u}]' <<<"$out")
    shift 3
  done
  echo "$out"
}
hyperfine_berth() { # name runs prepare cmd -> $OUT/berth-<name>.json
  local json=$OUT/berth-$1.json pa=()
  [ -n "$3" ] && pa=(--prepare "$3")
  if ! sh -c "$3" >>"$LOG" 2>&1 || ! sh -c "$4" >>"$LOG" 2>&1; then
    say "smoke run of berth $1 failed: $(tail -1 "$LOG")"; rm -f "$json"; return 1; fi
  say "hyperfine berth $1 ($2 runs)"
  hyperfine --runs "$2" --warmup 2 "${pa[@]}" --style basic --export-json "$json" -n "berth-$1" "$4" >>"$LOG" 2>&1 \
    || { say "hyperfine failed for berth $1"; rm -f "$json"; return 1; }
}
# anchors/bench.sh for one section; sets ANCHOR_OUT to its results dir
ANCHOR_OUT=""
anchors() { # section
  local flags=(--only "$1" --runs "$RUNS" --pull-runs "$PULL_RUNS" --mem-n "$MEMN")
  [ $DOCKER = 0 ] && flags+=(--no-docker)
  [ $CRUN = 0 ] && flags+=(--no-crun)
  say "anchors/bench.sh ${flags[*]}"
  "$ANCHORS/bench.sh" "${flags[@]}" > "$OUT/anchors-$1.out" 2>&1
  say "anchors/bench.sh --only $1 exited $?"
  ANCHOR_OUT=$(sed -n 's/^results: //p' "$OUT/anchors-$1.out" | tail -1)
  if [ -z "$ANCHOR_OUT" ] || [ ! -d "$ANCHOR_OUT" ]; then
    say "anchors/bench.sh --only $1 gave no results (see anchors-$1.out)"; ANCHOR_OUT=""; return 1; fi
  mkdir -p "$OUT/anchors-$1"
  cp "$ANCHOR_OUT"/*.json "$ANCHOR_OUT"/*.txt "$ANCHOR_OUT"/bench.log "$OUT/anchors-$1/" 2>/dev/null
  ANCHOR_OUT=$OUT/anchors-$1
}
anchor_row() { # section benchmark engine anchors-name unit
  local json=$ANCHOR_OUT/$4.json note
  if [ -n "$ANCHOR_OUT" ] && [ -s "$json" ]; then hf_row "$1" "$2" "$3" false "$json" "$5" ""
  else
    note=$(grep -h "SKIP $4:" "$ANCHOR_OUT/bench.log" 2>/dev/null | head -1 | cut -c1-90)
    failed_row "$1" "$2" "$3" false "${note:-not measured}"
  fi
}
memtxt() { # label-prefix -> "rss pss" (MiB) from the anchors' mem.txt
  awk -v l="$1" 'index($0, l) == 1 {print $(NF-1), $NF; exit}' "$ANCHOR_OUT/mem.txt" 2>/dev/null
}
started_in() { # engine -> seconds from "engine: started N detached containers in X s"
  awk -v e="$1:" '$1 == e && /started/ {print $(NF-1); exit}' "$ANCHOR_OUT/mem.txt" 2>/dev/null
}
mib() { awk -v k="$1" 'BEGIN{printf "%.2f", k/1024}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }

render() { # -> table.txt, table.md; ratio = Berth's value / this row's value, per metric name
  jq -s -r '
    . as $rows
    | (reduce $rows[].section as $s ([]; if index([$s]) then . else . + [$s] end)) as $order
    | $order[] as $s
    | ($rows | map(select(.section == $s))) as $sec
    | ($sec | map(select(.berth and (.metrics | length) > 0)) | first) as $b
    | $sec[]
    | . as $r
    | [ .benchmark, .engine, (.n // "" | tostring), .note,
        ( .metrics[] | . as $x
          | ($b.metrics // [] | map(select(.name == $x.name)) | first) as $bx
          | $x.name, ($x.value | tostring), $x.unit,
            (if $r.berth or $bx == null or $x.value == 0 then "" else ($bx.value / $x.value | tostring) end) ) ]
    | @tsv' "$ROWS" > "$OUT/table.tsv"
  awk -F'\t' -v md="$OUT/table.md" '
    function fmt(v) { v += 0; a = v < 0 ? -v : v
      return a >= 1000 ? sprintf("%.0f", v) : a >= 100 ? sprintf("%.1f", v) : a >= 0.1 ? sprintf("%.2f", v) : sprintf("%.3f", v) }
    BEGIN {
      printf "%-44s %-32s %5s  %-42s %-22s %s\n", "benchmark", "engine", "n", "result", "Berth / this", "note"
      print "| benchmark | engine | n | result | Berth / this | note |" > md
      print "|---|---|--:|---|---|---|" > md
    }
    {
      res = ""; rat = ""
      for (i = 5; i + 2 <= NF; i += 4) {
        res = res (res == "" ? "" : "  ") $i " " fmt($(i+1)) " " $(i+2)
        if ($(i+3) != "") rat = rat (rat == "" ? "" : "  ") $i " " sprintf("%.2fx", $(i+3))
      }
      bench = ($1 == last) ? "" : $1; last = $1
      printf "%-44s %-32s %5s  %-42s %-22s %s\n", bench, $2, $3, res, rat, $4
      eng = $2; if (eng ~ /^berth/) eng = "**" eng "**"
      printf "| %s | %s | %s | %s | %s | %s |\n", bench, eng, $3, res, rat, $4 > md
    }' "$OUT/table.tsv" > "$OUT/table.txt"
}

# ---- machine facts ------------------------------------------------------------------------
ver() { "$@" 2>/dev/null | head -1 | tr -s ' ' | cut -c1-80; }
{
  echo "date: $(date -Is)"
  echo "kernel: $(uname -r)  cpus: $(nproc)  mem: $(free -m | awk '/Mem/{print $2}') MiB"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "busiest processes at start: $(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{printf "%s(%s%%) ", $2, $1}')"
  echo "berth: $(git -C "$REPO" describe --always --dirty 2>/dev/null) ($(ver "$BIN/berth" --version))"
  echo "runc: $(ver runc --version)  crun: $(ver crun --version)"
  echo "containerd: $(ver containerd --version)"
  echo "podman: $(ver podman --version)  conmon: $(ver conmon --version)"
  echo "docker: $(ver dockerd --version)  skopeo: $(ver skopeo --version)  hyperfine: $(ver hyperfine --version)"
  echo "rustc: $(ver rustc --version)"
  echo "mode: $([ $QUICK = 1 ] && echo quick || echo full)  sections: $ONLY  peers: $PEERS  docker: $DOCKER  crun: $CRUN"
  echo "counts: runs=$RUNS pull-runs=$PULL_RUNS mem-n=$MEMN ps-n=$PSN clients=$CLIENTS x $PER_CLIENT"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- registry, images, berthd ---------------------------------------------------------------
pid_alive "$BASE/registry.pid" || REGISTRY_STARTED=1
"$ANCHORS/registry.sh" >/dev/null || { say "registry failed to start"; exit 1; }
if ! skopeo inspect --raw --tls-verify=false "docker://$REG/multilayer:latest" >/dev/null 2>&1 \
   || [ ! -d "$BASE/rootfs/busybox" ]; then
  say "images missing: running anchors/make-images.sh"; "$ANCHORS/make-images.sh" >>"$LOG" 2>&1 || exit 1
fi
BB=$REG/busybox:latest
ML=$REG/multilayer:latest

# Bridge names and addresses of our own, away from the tests' (bt*, 10.208.0.0/12) and the
# defaults; the benchmarks use --network none, so no bridge is made.
cat > "$WORK/config.toml" <<TOML
data-root = "$WORK/root"
exec-root = "$WORK/state"
log-dir = "$WORK/logs"
hosts = ["unix://$SOCK"]
[network]
bridge = "bbench0"
bridge-prefix = "bbench-"
subnet = "10.199.0.0/24"
address-pools = ["10.199.16.0/20"]
ip-forward = false
ip-masq = false
TOML
start_berthd || exit 1
echo "berthd: $(B version --format json 2>/dev/null | jq -c '.Server | {Version, GitCommit}' 2>/dev/null)" >> "$OUT/env.txt"
B pull -q "$BB" >>"$LOG" 2>&1 || { say "berth pull $BB failed"; exit 1; }

# ---- run --rm true ------------------------------------------------------------------------
if want run; then
  S=run; T='run --rm busybox true'
  if hyperfine_berth run "$RUNS" "" "$BIN/berth -H unix://$SOCK run --rm --network none $BB true"; then
    hf_row $S "$T" "berth (runc)" true "$OUT/berth-run.json" ms ""
  else failed_row $S "$T" "berth (runc)" true "see bench.log"; fi
  if [ $PEERS = 1 ]; then
    anchors run
    anchor_row $S "$T" "runc run, bare bundle" runc-run-bundle ms
    [ $CRUN = 1 ] && anchor_row $S "$T" "crun run, bare bundle" crun-run-bundle ms
    anchor_row $S "$T" "ctr run --rm (runc)" ctr-run-runc ms
    [ $CRUN = 1 ] && anchor_row $S "$T" "ctr run --rm (crun)" ctr-run-crun ms
    anchor_row $S "$T" "podman run --rm (runc)" podman-run-runc ms
    [ $CRUN = 1 ] && anchor_row $S "$T" "podman run --rm (crun)" podman-run-crun ms
    if [ $DOCKER = 1 ]; then
      anchor_row $S "$T" "docker run --rm (runc)" docker-run-runc ms
      [ $CRUN = 1 ] && anchor_row $S "$T" "docker run --rm (crun)" docker-run-crun ms
    fi
    anchor_row $S "$T" "floor: unshare ... true" floor-unshare ms
    anchor_row $S "$T" "floor: chroot true" floor-chroot ms
  fi
fi

# ---- pull + unpack ----------------------------------------------------------------------------
if want pull; then
  S=pull; T='pull+unpack multilayer (5 layers)'
  # rmi drops the last name and garbage-collects the blobs and layer snapshots it held.
  if hyperfine_berth pull "$PULL_RUNS" "$BIN/berth -H unix://$SOCK rmi -f $ML >/dev/null 2>&1; true" \
       "$BIN/berth -H unix://$SOCK pull -q $ML"; then
    hf_row $S "$T" "berth pull" true "$OUT/berth-pull.json" s ""
  else failed_row $S "$T" "berth pull" true "see bench.log"; fi
  B rmi -f "$ML" >/dev/null 2>&1
  {
    echo "after the last berth rmi: blobs $(find "$WORK/root/content/blobs" -type f 2>/dev/null | wc -l)," \
         "snapshots $(find "$WORK/root/snapshots" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)," \
         "images: $(B images -q 2>/dev/null | tr '\n' ' ')"
  } >> "$LOG"
  if [ $PEERS = 1 ]; then
    anchors pull
    anchor_row $S "$T" "skopeo copy (fetch only)" skopeo-fetch-only s
    anchor_row $S "$T" "ctr image pull" ctr-pull-unpack s
    anchor_row $S "$T" "podman pull" podman-pull s
    [ $DOCKER = 1 ] && anchor_row $S "$T" "docker pull" docker-pull s
  fi
fi

# ---- memory and detached starts ----------------------------------------------------------------
if want mem; then
  say "memory: $MEMN detached sleep containers"
  # A fresh daemon, as the anchors measure a freshly started containerd.
  stop_berthd; start_berthd || exit 1
  B images >/dev/null; sleep 3
  r0=$(rss_kib "$BERTHD_PID"); s0=$(pss_kib "$BERTHD_PID")
  errors=0; t0=$(now)
  for i in $(seq 1 "$MEMN"); do
    B run -d --network none --name "bsleep-$i" "$BB" sleep 1000 >/dev/null 2>>"$LOG" || errors=$((errors + 1))
  done
  starts=$(elapsed "$t0"); sleep 3
  r1=$(rss_kib "$BERTHD_PID"); s1=$(pss_kib "$BERTHD_PID")
  sp=$(shims); ns=$(echo $sp | wc -w)
  say "berth: $MEMN starts in $starts s ($errors errors), $ns shims"
  note=""; [ "$errors" != 0 ] && note="$errors failed starts"
  if [ "$ns" -gt 0 ]; then
    shim_r=$(( $(sum_rss $sp) / ns )); shim_s=$(( $(sum_pss $sp) / ns ))
    dr=$(( (r1 - r0) / MEMN )); ds=$(( (s1 - s0) / MEMN ))
    row mem-total "per-container memory (daemon growth + shim)" "berth (berthd + berth-shim)" true "$MEMN" "$note" \
      "$(m RSS "$(mib $((dr + shim_r)))" MiB PSS "$(mib $((ds + shim_s)))" MiB)"
    row mem-shim "per-container shim/monitor, each" "berth-shim" true "$ns" "" \
      "$(m RSS "$(mib $shim_r)" MiB PSS "$(mib $shim_s)" MiB)"
    row mem-daemon "daemon growth per container" "berthd" true "$MEMN" "" \
      "$(m RSS "$(mib $dr)" MiB PSS "$(mib $ds)" MiB)"
  else failed_row mem-total "per-container memory (daemon growth + shim)" "berth (berthd + berth-shim)" true "no shims found"; fi
  row mem-idle "daemon idle (fresh start)" "berthd" true "1" "" "$(m RSS "$(mib "$r0")" MiB PSS "$(mib "$s0")" MiB)"
  row starts "$MEMN detached starts (run -d sleep), wall" "berth run -d" true "$MEMN" "$note" "$(m wall "$starts" s)"
  remove_all
  if [ $PEERS = 1 ]; then
    anchors mem
    two() { # section benchmark engine label [n]
      local v; v=$(memtxt "$4")
      if [ -n "$v" ]; then set -- "$1" "$2" "$3" "$4" "${5:-$MEMN}" $v; row "$1" "$2" "$3" false "$5" "" "$(m RSS "$6" MiB PSS "$7" MiB)"
      else failed_row "$1" "$2" "$3" false "not in mem.txt"; fi
    }
    two mem-total "per-container memory (daemon growth + shim)" "containerd + shim (ctr)" "=> ctr per-container"
    two mem-total "per-container memory (daemon growth + shim)" "podman: conmon (no daemon)" "podman conmon each"
    [ $DOCKER = 1 ] && two mem-total "per-container memory (daemon growth + shim)" "dockerd + containerd + shim" "=> docker per-container"
    two mem-shim "per-container shim/monitor, each" "containerd-shim-runc-v2 (ctr)" "containerd-shim-runc-v2 each"
    two mem-shim "per-container shim/monitor, each" "conmon (podman)" "podman conmon each"
    [ $DOCKER = 1 ] && two mem-shim "per-container shim/monitor, each" "containerd-shim-runc-v2 (docker)" "docker shim each"
    two mem-daemon "daemon growth per container" "containerd (CRI plugin on)" "containerd delta per container"
    if [ $DOCKER = 1 ]; then
      di=$(memtxt "dockerd idle"); dw=$(memtxt "dockerd with"); ci=$(memtxt "docker's containerd idle"); cw=$(memtxt "docker's containerd with")
      if [ -n "$di" ] && [ -n "$dw" ] && [ -n "$ci" ] && [ -n "$cw" ]; then
        read -r a b <<<"$di"; read -r c d <<<"$dw"; read -r e f <<<"$ci"; read -r g h <<<"$cw"
        row mem-daemon "daemon growth per container" "dockerd + its containerd" false "$MEMN" "" \
          "$(m RSS "$(awk -v a="$a" -v c="$c" -v e="$e" -v g="$g" -v n="$MEMN" 'BEGIN{printf "%.2f", (c-a+g-e)/n}')" MiB \
               PSS "$(awk -v a="$b" -v c="$d" -v e="$f" -v g="$h" -v n="$MEMN" 'BEGIN{printf "%.2f", (c-a+g-e)/n}')" MiB)"
      fi
    fi
    two mem-idle "daemon idle (fresh start)" "containerd, CRI plugin off" "containerd idle, CRI plugin disabled" 1
    two mem-idle "daemon idle (fresh start)" "containerd, CRI plugin on" "containerd idle (CRI plugin on)" 1
    [ $DOCKER = 1 ] && two mem-idle "daemon idle (fresh start)" "dockerd" "dockerd idle" 1
    for e in ctr podman docker; do
      [ $e = docker ] && [ $DOCKER = 0 ] && continue
      v=$(started_in $e)
      if [ -n "$v" ]; then row starts "$MEMN detached starts (run -d sleep), wall" "$e run -d" false "$MEMN" "" "$(m wall "$v" s)"
      else failed_row starts "$MEMN detached starts (run -d sleep), wall" "$e run -d" false "not in mem.txt"; fi
    done
  fi
fi

# ---- API under load -------------------------------------------------------------------------------
if want api; then
  remove_all
  say "api: ps -a with 0 containers"
  if hyperfine_berth ps-empty "$PS_RUNS" "" "$BIN/berth -H unix://$SOCK ps -a"; then
    hf_row api "berth ps -a latency" "0 containers" true "$OUT/berth-ps-empty.json" ms ""
  fi
  say "api: creating $PSN containers (4 clients in parallel)"
  t0=$(now)
  seq 1 "$PSN" | xargs -P 4 -I{} sh -c "$BIN/berth -H unix://$SOCK create --network none --name bps-{} $BB true >/dev/null 2>>$OUT/create-errors.log || echo x >> $OUT/create-failed" 
  created_in=$(elapsed "$t0")
  failed=0; [ -f "$OUT/create-failed" ] && failed=$(wc -l < "$OUT/create-failed")
  have=$(B ps -aq | wc -l)
  row api-create "berth create, 4 parallel clients" "$PSN creates" true "$PSN" "$failed failed; $have containers listed" \
    "$(m wall "$created_in" s rate "$(awk -v n="$PSN" -v t="$created_in" 'BEGIN{printf "%.1f", n/t}')" "/s")"
  if hyperfine_berth ps-full "$PS_RUNS" "" "$BIN/berth -H unix://$SOCK ps -a"; then
    slower=""
    [ -s "$OUT/berth-ps-empty.json" ] && slower="p50 $(jq -rn --slurpfile a "$OUT/berth-ps-full.json" \
      --slurpfile b "$OUT/berth-ps-empty.json" '$a[0].results[0].median / $b[0].results[0].median * 100 | round / 100')x the empty list"
    hf_row api "berth ps -a latency" "$have containers (created)" true "$OUT/berth-ps-full.json" ms "$slower"
  fi
  t0=$(now); remove_all; removed_in=$(elapsed "$t0")
  row api-rm "berth rm -f, 50 ids per call" "$have containers" true "$have" "$(B ps -aq | wc -l) left" "$(m wall "$removed_in" s)"

  say "api: $CLIENTS concurrent clients x $PER_CLIENT (run -d sleep, rm -f)"
  mkdir -p "$OUT/clients"
  client() { # n
    local i id errs=0
    for i in $(seq 1 "$PER_CLIENT"); do
      if id=$(B run -d --network none --name "bcl-$1-$i" "$BB" sleep 1000 2>>"$OUT/clients/$1.err"); then
        B rm -f "$id" >/dev/null 2>>"$OUT/clients/$1.err" || errs=$((errs + 1))
      else errs=$((errs + 1)); fi
    done
    echo "$errs" > "$OUT/clients/$1.errors"
  }
  CLIENT_PIDS=(); t0=$(now)
  for c in $(seq 1 "$CLIENTS"); do client "$c" & CLIENT_PIDS+=($!); done
  wait "${CLIENT_PIDS[@]}"; CLIENT_PIDS=()
  wall=$(elapsed "$t0")
  errs=$(cat "$OUT"/clients/*.errors 2>/dev/null | awk '{s+=$1} END{print s+0}')
  left=$(B ps -aq | wc -l); left_shims=$(shims | wc -w)
  ops=$((CLIENTS * PER_CLIENT))
  say "api: $ops run+rm in $wall s, $errs errors, $left containers and $left_shims shims left"
  row api-load "$CLIENTS clients x $PER_CLIENT (run -d + rm -f)" "berth" true "$ops" \
    "$errs errors; $left containers, $left_shims shims left" \
    "$(m wall "$wall" s rate "$(awk -v n="$ops" -v t="$wall" 'BEGIN{printf "%.2f", n/t}')" "containers/s")"
  remove_all
fi

# ---- events -----------------------------------------------------------------------------------------
if want events; then
  EV=$(cat "$OUT/events-bench-path" 2>/dev/null)
  [ -x "$EV" ] || EV=$(ls -t "$REPO"/target/release/deps/events-* 2>/dev/null | grep -v '\.d$' | head -1)
  if [ -x "$EV" ]; then
    say "events bench: $EV"
    BERTH_BIN_DIR=$BIN "$EV" --bench > "$OUT/events.txt" 2>>"$LOG"; rc=$?
    [ $rc = 0 ] || say "events bench exited $rc"
    ev() { grep -F "$1" "$OUT/events.txt" | head -1; }
    num() { sed -n "s/.*$1 *\([0-9.]*\).*/\1/p"; }
    for w in "1 publisher awaiting each ack" "16 concurrent publishers" "16 publishers + 1 stalled reader" "Publisher helper (one queue)"; do
      l=$(ev "$w"); r=$(awk '{print $(NF-1)}' <<<"$l")
      if [ -n "$l" ]; then row events "event publish throughput" "$w" true "" "" "$(m rate "$r" events/s)"
      else failed_row events "event publish throughput" "$w" true "not printed"; fi
    done
    for n in " 1 subscriber" "50 subscriber"; do
      l=$(ev "fan-out latency, $n")
      if [ -n "$l" ]; then
        row events-fan "event fan-out, 4 publishers" "$(echo "$n" | tr -d ' ' | sed 's/subscriber/ subscriber(s)/')" true "" "" \
          "$(m p50 "$(num p50 <<<"$l")" ms p99 "$(num p99 <<<"$l")" ms rate "$(sed -n 's/.*(\([0-9.]*\) events.*/\1/p' <<<"$l")" events/s)"
      else failed_row events-fan "event fan-out, 4 publishers" "$n subscribers" true "not printed"; fi
    done
  else failed_row events "event bus" "events bench" true "bench binary not built (drop --no-build)"; fi
fi

# ---- output ------------------------------------------------------------------------------------------
remove_all
stop_berthd
echo "after the run: $(shims | wc -w) berth shims, $(mounts_below "$WORK" | wc -l) mounts under $WORK," \
     "$(runc --root "$WORK/state/runc/default" list -q 2>/dev/null | wc -l) runc containers" >> "$OUT/env.txt"
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/env.txt"
render
jq -n --rawfile env "$OUT/env.txt" --slurpfile rows "$ROWS" --arg ls "$LOAD_START" --arg le "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --arg kernel "$(uname -r)" --argjson cpus "$(nproc)" --arg commit "$(git -C "$REPO" describe --always --dirty)" \
  '{machine: {kernel: $kernel, cpus: $cpus, loadavg_start: $ls, loadavg_end: $le, berth_commit: $commit,
              facts: ($env | split("\n") | map(select(length > 0)))},
    note: "ratio = Berth value / peer value for the same metric in the same section; below 1 Berth is faster or smaller",
    rows: $rows}' > "$OUT/results.json"
{
  echo "# Berth benchmarks $TS"; echo; echo '```'; cat "$OUT/env.txt"; echo '```'; echo
  echo "Berth / this: Berth's value divided by this row's (same metric, same section); below 1 Berth is faster or smaller."
  echo; cat "$OUT/table.md"
} > "$OUT/table.md.tmp" && mv "$OUT/table.md.tmp" "$OUT/table.md"
echo
cat "$OUT/env.txt"
echo
echo "Berth / this = Berth's value divided by this row's (same metric); below 1: Berth is faster or smaller."
cat "$OUT/table.txt"
echo
echo "results: $OUT (results.json, table.md, table.txt, env.txt, bench.log)"
