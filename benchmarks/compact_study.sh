#!/usr/bin/env bash
# The compact-model study (issue 7) on both real datasets. Re-run to continue after an
# interruption: each finished grid point is kept in OUT.partial/points.jsonl (--resume).
# Usage: benchmarks/compact_study.sh [OUT_ROOT] [extra edgemed study flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-/tmp/edgemed-study}; shift || true
mkdir -p "$root" benchmarks/results
run() {  # name data [flags...]
  local name=$1 data=$2; shift 2
  local out="$root/$name" flags=()
  if [ -d "$out.partial" ]; then flags=(--resume); fi
  if [ -f "$out/study.json" ] && [ ! -d "$out.partial" ]; then echo "$out done"; else
    /usr/bin/time -f "$name wall %e s, user %U s, sys %S s" edgemed study --data "$data" --out "$out" "${flags[@]}" "$@"
  fi
  cp "$out/study.md" "benchmarks/results/study_$name.md"
  cp "$out/study.json" "benchmarks/results/study_$name.json"
  cp "$out/pareto.svg" "benchmarks/results/study_${name}_pareto.svg"
}
run cxr ../shared/datasets/pneumoniamnist_subset.npz "$@"
run brain ../shared/datasets/brain_mri "$@"
