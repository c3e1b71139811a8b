#!/usr/bin/env node
// Reads vitest's JSON report and prints exactly one line that CI parses:
//   tests: N passed, N failed, N skipped
// A test file that failed to load (no test in it failed, yet the file did) counts as one
// failed test, so a broken import can't look green. Exit code: 0 if at least one test ran
// and none failed, 1 if something failed, 2 if the report is missing/unreadable or no test ran.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? 'test-results/vitest.json';

let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.error(`summary: cannot read vitest report ${file}: ${err instanceof Error ? err.message : err}`);
  console.log('tests: 0 passed, 1 failed, 0 skipped');
  process.exit(2);
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const passed = num(report.numPassedTests);
let failed = num(report.numFailedTests);
const skipped = num(report.numPendingTests) + num(report.numTodoTests);

for (const suite of Array.isArray(report.testResults) ? report.testResults : []) {
  const results = Array.isArray(suite.assertionResults) ? suite.assertionResults : [];
  if (suite.status === 'failed' && !results.some((r) => r.status === 'failed')) {
    failed += 1;
    console.error(`summary: test file failed outside any test: ${suite.name}`);
  }
}

console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
if (failed > 0) process.exit(1);
if (passed === 0) {
  console.error('summary: no test ran');
  process.exit(2);
}
