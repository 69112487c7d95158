#!/bin/sh
# Runs the rate limiter benchmarks. BenchmarkRedisCheck needs Redis at 127.0.0.1:6379 (it is
# skipped without it, unless CI=true). BENCHTIME and COUNT pass through to go test.
set -eu
cd "$(dirname "$0")/../.."
exec go test -run '^$' -bench . -benchtime "${BENCHTIME:-3s}" -count "${COUNT:-1}" ./ratelimit/
