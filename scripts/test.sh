#!/usr/bin/env bash
# Runs strata's whole test suite: formatting, lints, and every test of every crate.
# Needs only the Rust toolchain (rustfmt and clippy components).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
