#!/usr/bin/env bash
# Long fuzzing passes over every decoder of untrusted bytes (docs/fuzzing.md).
#
#   scripts/fuzz.sh [--cases N | --time SECONDS] [TARGET]
#
# Runs each target for N cases (default 100000) or SECONDS seconds, optimised but with
# overflow checks and debug assertions on (the `fuzz` profile). TARGET is one of the
# names below, or all of them when left out. The normal test suite runs the same targets
# with a short default budget.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  echo "targets: ${!TARGETS[*]}"
  exit 2
}

# target name -> "package test-binary filter"
declare -A TARGETS=(
  [frame]="strata-engine --lib fuzz_targets::fuzz_frame"
  [record]="strata-engine --lib fuzz_targets::fuzz_record"
  [segment_header]="strata-engine --lib fuzz_targets::fuzz_segment_header"
  [checkpoint]="strata-engine --lib fuzz_targets::fuzz_checkpoint"
  [table]="strata-engine --lib fuzz_targets::fuzz_table"
  [store_files]="strata-engine --lib fuzz_targets::fuzz_store_files"
  [metadata]="strata-engine --lib fuzz_targets::fuzz_metadata"
  [filter]="strata-engine --lib fuzz_targets::fuzz_filter"
  [http]="strata-server --test=fuzz_http fuzz_http"
  [grpc]="strata-server --test=fuzz_grpc fuzz_grpc"
)
ORDER=(frame record segment_header checkpoint table store_files metadata filter http grpc)

budget=(STRATA_FUZZ_CASES=100000)
target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cases) [ $# -ge 2 ] || usage; budget=("STRATA_FUZZ_CASES=$2"); shift 2 ;;
    --time) [ $# -ge 2 ] || usage; budget=("STRATA_FUZZ_SECONDS=$2"); shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$target" ] || usage; target="$1"; shift ;;
  esac
done

if [ -n "$target" ]; then
  [ -n "${TARGETS[$target]+set}" ] || { echo "unknown target: $target" >&2; usage; }
  ORDER=("$target")
fi

failed=()
for name in "${ORDER[@]}"; do
  read -r package binary filter <<<"${TARGETS[$name]}"
  echo "== fuzz target $name (${budget[*]})"
  # --nocapture shows each target's case count and time.
  if ! env "${budget[@]}" cargo test --locked --profile fuzz -p "$package" "$binary" \
      -- "$filter" --nocapture --test-threads=1; then
    failed+=("$name")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "all fuzz targets passed"
