#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every
# test. What CI runs (.ci/run calls exactly this).
#
#   scripts/test.sh               everything: release + tests, ASan/UBSan unit
#                                 and integration tests, fuzz targets for
#                                 FUZZ_SECONDS each
#   scripts/test.sh --quick       release build + tests only
#
# Environment: FUZZ_SECONDS (default 30), JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
JOBS=${JOBS:-$(nproc)}
export CTEST_PARALLEL_LEVEL=${CTEST_PARALLEL_LEVEL:-$JOBS}
start=$(date +%s)
passed=0
failed=0

stage() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - start)); }

# Adds the counts from a ctest log's summary line to the totals.
count_ctest() {
  local line total bad
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" | tail -1 || true)
  [[ -n "$line" ]] || { failed=$((failed + 1)); return; }
  bad=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
  passed=$((passed + total - bad))
  failed=$((failed + bad))
}

run_ctest() {  # preset, log file, extra ctest args
  local preset=$1 log=$2
  shift 2
  set +e
  ctest --preset "$preset" -j "$JOBS" "$@" 2>&1 | tee "$log"
  set -e
  count_ctest "$log"
}

stage "dependencies"
bash scripts/install-deps.sh

logs=$(mktemp -d /tmp/egressd-test.XXXXXX)

stage "release build"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS"

stage "release tests (unit + integration)"
run_ctest release "$logs/release.log"

if ((quick == 0)); then
  stage "ASan + UBSan build"
  cmake --preset asan-ubsan >/dev/null
  cmake --build --preset asan-ubsan -j "$JOBS"
  stage "ASan + UBSan unit tests"
  run_ctest asan-ubsan "$logs/asan.log" -L unit
  # The namespace world against the sanitized egressd (leaks are checked at
  # each exit); the image and the syscall guard are release-only.
  stage "ASan + UBSan integration tests"
  run_ctest asan-ubsan "$logs/asan-integration.log" -L integration -E '^(image\.|perf\.|integration\.image$)'

  stage "fuzz build"
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j "$JOBS"
  for fuzzer in client_hello_fuzz http1_head_fuzz proxy_header_fuzz config_loader_fuzz access_log_record_fuzz ip_literal_fuzz k8s_event_fuzz k8s_watch_stream_fuzz dns_answer_fuzz http1_stream_fuzz h2c_proxy_fuzz; do
    stage "fuzz $fuzzer for ${FUZZ_SECONDS}s"
    work=$(mktemp -d /tmp/egressd-fuzz.XXXXXX)
    cp -r "test/fuzz/corpus/$fuzzer/." "$work/"
    if build/fuzz/test/fuzz/$fuzzer -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 \
        -print_final_stats=1 "$work" >"$logs/$fuzzer.log" 2>&1; then
      passed=$((passed + 1))
      grep -E 'stat::number_of_executed_units' "$logs/$fuzzer.log" || true
    else
      failed=$((failed + 1))
      tail -40 "$logs/$fuzzer.log"
    fi
    rm -rf "$work"
  done
fi

stage "done"
# CI shows only the end of this output: name what failed here, with the
# failing test cases of the integration suites (unittest's FAIL/ERROR lines).
for log in "$logs"/release.log "$logs"/asan.log "$logs"/asan-integration.log; do
  [[ -f "$log" ]] || continue
  grep -E '^FLAKY: ' "$log" | sort -u || true
  if grep -q 'The following tests FAILED' "$log"; then
    echo "failed in $(basename "$log" .log):"
    sed -n '/The following tests FAILED/,$p' "$log" | grep -E '^\s+[0-9]+ - ' || true
    grep -E '^(FAIL|ERROR): ' "$log" | sort -u | head -20 || true
    grep -E -B2 -A12 '^(FAIL|ERROR): ' "$log" | grep -E 'Error|assert|Exception' | head -20 || true
  fi
done
echo "logs: $logs"
echo "took $(($(date +%s) - start))s"
echo "tests: $passed passed, $failed failed"
((failed == 0))
