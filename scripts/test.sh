#!/usr/bin/env bash
# Runs the whole test suite.
#
# With DATABASE_URL set, the tests use that PostgreSQL (they create their own
# databases on it). Without it, this script builds berth, starts a private
# PostgreSQL from the installed binaries (`berth pg start`), runs the tests
# against it and stops it on exit. Extra arguments go to `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ -z "${DATABASE_URL:-}" ]]; then
  cargo build -p berth --bin berth
  berth="${CARGO_TARGET_DIR:-target}/debug/berth"
  data_dir="${BERTH_TEST_PG_DIR:-$PWD/target/test-pg}"
  # PostgreSQL runs as the `postgres` user when we are root; it must be able
  # to reach the data directory. Fall back to /tmp when it cannot.
  if [[ "$(id -u)" == 0 && -z "${BERTH_TEST_PG_DIR:-}" ]] \
    && ! runuser -u postgres -- test -x "$(dirname "$data_dir")" 2>/dev/null; then
    data_dir="/tmp/berth-test-pg"
  fi
  env_line="$("$berth" pg start --data-dir "$data_dir")"
  trap '"$berth" pg stop --data-dir "$data_dir" || true' EXIT
  export DATABASE_URL="${env_line#DATABASE_URL=}"
  echo "scripts/test.sh: private PostgreSQL at ${DATABASE_URL} (data: ${data_dir})" >&2
fi

cargo test --workspace --no-fail-fast "$@"
