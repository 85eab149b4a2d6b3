#!/usr/bin/env bash
# Long fuzzing, outside CI: every libFuzzer target (or the ones named) for
# SECONDS each, JOBS at a time, each starting from its committed seed corpus
# (test/fuzz/corpus/TARGET). Afterwards each corpus is minimized
# (`-merge=1`: the fewest inputs that keep the coverage) and written back, so
# `git diff --stat test/fuzz/corpus` shows what the run added. Crashes, leaks
# and timeouts are kept in build/fuzz-findings/TARGET/ and named in the
# summary; the script exits 1 if any target found one.
#
#   scripts/fuzz.sh                          every target for an hour
#   scripts/fuzz.sh --seconds 600 dns_answer_fuzz
#   scripts/fuzz.sh --no-minimize            leave the corpora as they are
#
# A finding is fixed with a regression test named after it (a unit test, or
# the input added to the target's corpus as regression-<what>).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=3600
jobs=$(nproc)
minimize=1
targets=()
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-minimize) minimize=0; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -nE 's/^egressd_add_fuzzer\(([a-z0-9_]+) .*/\1/p' test/fuzz/CMakeLists.txt)
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs" --target "${targets[@]}"

findings=build/fuzz-findings
mkdir -p "$findings"
logs=$(mktemp -d /tmp/egressd-fuzz-long.XXXXXX)

run_one() {  # target
  local t=$1 work="$logs/$1.corpus"
  mkdir -p "$work" "$findings/$t"
  cp -r "test/fuzz/corpus/$t/." "$work/"
  set +e
  "build/fuzz/test/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$findings/$t/" "$work" >"$logs/$t.log" 2>&1
  echo $? >"$logs/$t.rc"
  set -e
}

running=0
for t in "${targets[@]}"; do
  echo "fuzz.sh: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

bad=0
printf '\n%-26s %12s %8s %10s %s\n' target executions corpus coverage result
for t in "${targets[@]}"; do
  rc=$(cat "$logs/$t.rc")
  execs=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+)/\1/p' "$logs/$t.log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$logs/$t.log" | tail -1 | cut -d' ' -f2)
  if ((minimize == 1)); then
    merged="$logs/$t.merged"
    mkdir -p "$merged"
    "build/fuzz/test/fuzz/$t" -merge=1 -rss_limit_mb=2048 "$merged" "test/fuzz/corpus/$t" "$logs/$t.corpus" \
      >"$logs/$t.merge.log" 2>&1
    # Hand-named seeds and regression inputs keep their names (and stay
    # even when redundant); what the fuzzer found is named by its SHA-1.
    for f in "test/fuzz/corpus/$t"/*; do
      [[ -f "$f" ]] || continue
      base=$(basename "$f")
      [[ "$base" =~ ^[0-9a-f]{40}$ ]] && continue
      rm -f "$merged/$(sha1sum "$f" | cut -d' ' -f1)"
      cp "$f" "$merged/$base"
    done
    rm -rf "test/fuzz/corpus/$t"
    mkdir -p "test/fuzz/corpus/$t"
    cp -r "$merged/." "test/fuzz/corpus/$t/"
  fi
  n=$(find "test/fuzz/corpus/$t" -type f | wc -l)
  result=ok
  if [[ "$rc" != 0 ]]; then
    result="FOUND (exit $rc): $(ls "$findings/$t" | tr '\n' ' ')"
    bad=1
  fi
  printf '%-26s %12s %8s %10s %s\n' "$t" "${execs:-?}" "$n" "${cov:-?}" "$result"
done
echo "fuzz.sh: logs in $logs"
exit $bad
