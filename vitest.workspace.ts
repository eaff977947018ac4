/**
 * The one list of test projects. `vitest.config.ts` imports it into `test.projects` (Vitest 5 no longer reads a
 * workspace file by itself), so adding a package's tests here is what makes them run.
 */
import type { TestProjectInlineConfiguration } from "vitest/config"

// Real PostgreSQL servers start in about a second, but a standby, a crash recovery or a failover takes several:
// these limits bound a hung test, they are not expectations of speed.
const realPostgres = { testTimeout: 120_000, hookTimeout: 120_000 }

const projects: Array<TestProjectInlineConfiguration> = [
  { test: { name: "testkit", root: "./packages/testkit", include: ["test/**/*.test.ts"], ...realPostgres } },
  { test: { name: "core", root: "./packages/core", include: ["test/**/*.test.ts"], ...realPostgres } },
  { test: { name: "cli", root: "./packages/cli", include: ["test/**/*.test.ts"], ...realPostgres } }
]

export default projects
