#!/usr/bin/env bash
# Benchmarks of key verification and bulk key creation (SPEC §3, §4 "must not go to storage on
# the hot path"):
#   1. go test benchmarks: Verifier.Verify with a warm cache, in process (target ≤ 1 µs and
#      ≤ 2 allocations per call), and bulk key creation through the store (target ≥ 2,000 keys/s
#      on SQLite);
#   2. POST /v1/keys/verify of a real keygate serve over loopback, at each number of stored keys,
#      on SQLite and PostgreSQL (go run ./bench/verify; see its doc comment).
#
# Usage: bench/verify/run.sh [flags of bench/verify]     e.g. -keys 10000,1000000 -duration 10s
# Needs PostgreSQL at postgres://postgres@127.0.0.1:5432 (override: -pg URL, and
# KEYGATE_TEST_POSTGRES_URL for the store benchmarks); it only creates and drops databases named
# keygate_bench_* / keygate_test_*. Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "# keygate $(git describe --always --dirty 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if [ -n "$(git status --porcelain -- . ':!bench/verify' 2>/dev/null)" ]; then
	echo "# note: the working tree has uncommitted changes outside bench/verify; they are measured too"
fi
echo
echo "## Verifier.Verify, warm cache, in process"
go test -run XXX -bench 'VerifyWarm' -benchmem -count 3 ./verify/
echo
echo "## Bulk key creation through the store (Tx.CreateKeys, 1,000 keys per transaction)"
go test -run XXX -bench 'CreateKeys$' -benchmem -benchtime 20000x -count 3 ./store/...
echo
echo "## POST /v1/keys/verify over loopback"
go run ./bench/verify "$@"
