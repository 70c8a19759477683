#!/usr/bin/env bash
# Where the CPU goes during one bench phase, for the whole machine: runs
# `turbochat-bench run` against ONE target, records every CPU with `perf`
# (cpu-clock samples with call graphs) during the measured part of the phase,
# and writes
#   bench/results/profiles/<timestamp>-<name>.svg     flamegraph (inferno)
#   bench/results/profiles/<timestamp>-<name>.txt     CPU share per process
#                                                     and the bench's table
#   bench/results/profiles/<timestamp>-<name>.folded.gz  the stacks, for
#                                                     inferno-diff-folded or grep
# The processes are told apart by their worker threads' names (node-worker,
# router-worker, bench-worker, floor-worker; PostgreSQL's backends are
# "postgres"; Socket.IO is "node", the Node.js binary).
#
# Usage: bench/profile.sh NAME [turbochat-bench run flags...]
#   bench/profile.sh 3n2r-10k --targets 3n2r --clients 10000 --rate 2000
# Needs perf (Debian's linux-perf) and inferno (cargo install inferno); both
# are installed here when missing. Uses the release binaries under
# $CARGO_TARGET_DIR (default /var/tmp/turbochat-target), building them first.
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:?usage: bench/profile.sh NAME [turbochat-bench run flags...]}"
shift
case " $* " in
  *" --targets "*) ;;
  *) echo "profile.sh: give exactly one --targets (e.g. --targets 3n2r)" >&2; exit 2 ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/turbochat-target}"
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno
cargo build --quiet --release -p turbochat-node -p turbochat-router -p turbochat-bench
export TURBOCHAT_BIN_DIR="$CARGO_TARGET_DIR/release"
bench="$CARGO_TARGET_DIR/release/turbochat-bench"

out=bench/results/profiles
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Defaults the bench would use, so the recording window can be computed.
warmup=5; duration=20
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --warmup) warmup="${args[$((i + 1))]}" ;;
    --duration) duration="${args[$((i + 1))]}" ;;
  esac
done

"$bench" run --results-dir "$work" "$@" >"$work/table.txt" 2>"$work/stderr.txt" &
bench_pid=$!
# The phase starts when the bench says it is offering the load.
until grep -q "offering" "$work/stderr.txt" 2>/dev/null; do
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/stderr.txt" >&2; exit 1; }
  sleep 0.2
done
sleep "$warmup"
# Record the middle of the measured part (not its first and last second).
record=$(awk -v d="$duration" 'BEGIN { r = d - 2; if (r < 1) r = 1; print r }')
sleep 1
perf record -q -e cpu-clock -F 499 -a -g -o "$work/perf.data" -- sleep "$record" 2>/dev/null
wait "$bench_pid"

perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$work/folded"
inferno-flamegraph --title "turbochat-bench run $* (whole machine, cpu-clock)" \
  --countname samples <"$work/folded" >"$out/$stamp-$name.svg"

{
  echo "turbochat-bench run $*"
  echo "perf: cpu-clock at 499 Hz on all CPUs for ${record} s of the measured phase"
  echo
  echo "CPU share by process (of all samples of all CPUs; swapper = idle):"
  awk '{ n = $NF; split($1, f, ";"); comm = f[1]; sub(/-[0-9]+(\/[0-9]+)?$/, "", comm);
         total += n; by[comm] += n }
       END { for (c in by) printf "%6.1f%%  %s\n", 100 * by[c] / total, c; }' "$work/folded" |
    sort -rn | head -12
  # An idle CPU is sampled in the kernel's idle task ("swapper").
  awk -v cpus="$(nproc)" '{ n = $NF; total += n; if ($1 ~ /^swapper/) idle += n }
       END { printf "\nmachine busy: %.0f%% of %d CPUs\n", 100 * (total - idle) / total, cpus }' "$work/folded"
  echo
  cat "$work/table.txt"
} >"$out/$stamp-$name.txt"
cp "$work"/*-run.json "$out/$stamp-$name.json"
gzip -c "$work/folded" >"$out/$stamp-$name.folded.gz"
cat "$out/$stamp-$name.txt"
echo "flamegraph: $out/$stamp-$name.svg"
