#!/usr/bin/env bash
# Builds the release binary and runs both benchmark suites.
#
#   scripts/bench.sh                          # apply bench, then the million-user scenarios
#   scripts/bench.sh users=100000 reps=1      # arguments go to the scale suite (a quick run)
#
# Needs the Postgres server binaries, slapd and ldap-utils (as the integration tests do).
# Generated data is cached under target/bench-data/ (about 0.6 GB at 1M users).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin dirsync
echo "== apply (cargo bench --bench apply)"
cargo bench --locked --bench apply
echo "== scale (cargo bench --bench scale -- $*)"
cargo bench --locked --bench scale -- "$@"
