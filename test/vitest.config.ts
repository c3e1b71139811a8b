// The one vitest config for the whole monorepo: `bash scripts/test.sh` (or
// `npx vitest run --config test/vitest.config.ts`).
//
// Tests get throwaway PostgreSQL and Redis servers started once per run by
// test/harness/global-setup.ts; inside a test use `inject('pgUrl')` / `inject('redisUrl')`
// and `createTestDatabase(inject('pgUrl'))` from test/harness/services.ts.
//
// Two projects: everything on PostgreSQL, and the registry suite again on PGlite.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/** Absolute path of the repository root (this file lives in <root>/test/). */
export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

export const testInclude = [
  'apps/*/src/**/*.test.ts',
  'packages/*/src/**/*.test.ts',
  'apps/*/test/**/*.test.ts',
  'test/**/*.test.ts',
];

export const testExclude = ['**/node_modules/**', '**/dist/**'];

export default defineConfig({
  root: repoRoot,
  test: {
    globalSetup: [fileURLToPath(new URL('./harness/global-setup.ts', import.meta.url))],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    projects: [
      // Everything, with the registry on a real PostgreSQL server.
      { extends: true, test: { name: 'postgres', include: testInclude, exclude: testExclude } },
      // The registry suite once more on embedded PGlite: the same migrations and SQL must hold.
      {
        extends: true,
        test: { name: 'pglite', include: ['apps/registry/test/**/*.test.ts'], exclude: [...testExclude, 'apps/registry/test/replicas.test.ts'], env: { PLANETLITE_TEST_DB: 'pglite' } },
      },
    ],
  },
});
