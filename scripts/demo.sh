#!/usr/bin/env bash
# strata's main job on its embedded default, from a fresh clone: builds the `strata`
# binary, appends events to a store in ./strata-data (or $STRATA_DATA), reads them back
# by stream and in global order, and checks every checksum. Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p strata-cli
strata=./target/release/strata
export STRATA_DATA=${STRATA_DATA:-./strata-data}
echo "== append (store: $STRATA_DATA)"
$strata append account-1 --type Deposited '{"amount": 100}' '{"amount": 25}'
$strata append account-2 --type Deposited '{"amount": 40}'
printf '%s\n' '{"type": "Withdrawn", "data": {"amount": 30}}' | $strata append account-1 --file -
echo "== read account-1"
$strata read account-1
echo "== read \$all, newest first"
$strata read '$all' --backwards --format table
echo "== stats"
$strata stats
echo "== verify"
$strata verify
