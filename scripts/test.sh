#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, doc tests, and the benchmarks in
# their quick test mode. This is the command README.md gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that need PostgreSQL read this URL. In CI they fail when it is unreachable; on a
# developer machine without PostgreSQL they are skipped with a loud message.
export KEYWAY_TEST_POSTGRES_URL="${KEYWAY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# Benchmarks are built and smoke-run at small scale here; `cargo bench` runs them in full.
export KEYWAY_BENCH_QUICK=1

cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
