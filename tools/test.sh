#!/usr/bin/env bash
# Builds rebound and runs the whole test suite. Ends with the line "N passed, N failed[, N skipped]".
# Extra arguments go to vitest (e.g. a file filter: tools/test.sh test/unit).
set -uo pipefail
cd "$(dirname "$0")/.."
npm run --silent build || exit 1
# The tests are TypeScript too; vitest strips their types, so check them here.
npx tsc -p tsconfig.test.json || exit 1
mkdir -p test-results
rm -f test-results/results.json
npx vitest run --reporter=default --reporter=json --outputFile.json=test-results/results.json "$@"
status=$?
if [[ -f test-results/results.json ]]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync("test-results/results.json", "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    const failedSuites = r.testResults.filter((t) => t.status === "failed" && t.assertionResults.length === 0).length;
    const failed = r.numFailedTests + failedSuites;
    console.log(`${r.numPassedTests} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
  '
else
  echo "0 passed, 1 failed"
  [[ $status -eq 0 ]] && status=1
fi
exit $status
