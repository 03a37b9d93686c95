#!/usr/bin/env bash
# Builds every fuzz target (whatever `cargo fuzz list` names, so new targets join by being
# added to fuzz/Cargo.toml) and runs each for N seconds, default 20, from its corpus; seeds
# the corpora first with seed.sh when there are none. Exits non-zero if any target fails, with
# the reproducer left in fuzz/artifacts/<target>/.
#
#   fuzz/smoke.sh [SECONDS]
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
[ -d corpus ] || ./seed.sh
cargo +nightly fuzz build
passed=0 failed=()
for t in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  log="$(mktemp)"
  if cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^(stat::number_of_executed_units|#[0-9]+ *DONE)' "$log" || tail -n 3 "$log"
  else
    failed+=("$t")
    tail -n 60 "$log"
  fi
  rm -f "$log"
done
echo "fuzz: $passed passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failing targets: ${failed[*]} (reproducers in fuzz/artifacts/)"
  exit 1
fi
