#!/usr/bin/env bash
# The whole PlanetLite test suite: setup (deps, build), then vitest, then one summary
# line `tests: N passed, N failed, N skipped` that CI parses.
#
#   bash scripts/test.sh [extra vitest args...]
#
# Exit code: vitest's; also non-zero if no test ran at all.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
cd "$ROOT"

bash scripts/setup.sh || die "scripts/setup.sh failed (exit $?): no tests were run"

RESULTS_DIR="$ROOT/test-results"
RESULTS_JSON="$RESULTS_DIR/vitest.json"
mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS_JSON"

log "tests: vitest run"
set +e
npx --no-install vitest run --config test/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$RESULTS_JSON" \
  "$@" </dev/null
vitest_rc=$?
node scripts/summary.mjs "$RESULTS_JSON"
summary_rc=$?
set -e

# summary.mjs fails when the report is missing or no test ran; don't let that pass.
if [ "$vitest_rc" -eq 0 ] && [ "$summary_rc" -ne 0 ]; then
  exit "$summary_rc"
fi
exit "$vitest_rc"
