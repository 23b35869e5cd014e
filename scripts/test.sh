#!/usr/bin/env bash
# Runs strata's whole test suite: formatting, lints, and every test of every crate.
# Needs the Rust toolchain (rustfmt and clippy components), PostgreSQL 15 binaries
# (initdb, pg_ctl) for the PostgreSQL tests, and for the client acceptance tests Python 3
# with pip and Node 20+ with npm, with access to PyPI and npm (the official KurrentDB
# clients are installed once per target directory). STRATA_SKIP_CLIENT_TESTS=1 skips the
# client tests, visibly.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
