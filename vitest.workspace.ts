/**
 * The one list of test projects. `vitest.config.ts` imports it into `test.projects` (Vitest 5 no longer reads a
 * workspace file by itself), so adding a package's tests here is what makes them run.
 */
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { TestProjectInlineConfiguration } from "vitest/config"

// Real PostgreSQL servers start in about a second, but a standby, a crash recovery or a failover takes several:
// these limits bound a hung test, they are not expectations of speed.
const realPostgres = { testTimeout: 120_000, hookTimeout: 120_000 }

/**
 * Inside the workspace the packages are their TypeScript sources (what their `source` export condition names, which
 * the toolchain gives Node for every process it starts); installed from npm they are their built `dist/`.
 */
const here = dirname(fileURLToPath(import.meta.url))
export const sources: Record<string, string> = {
  // the subpath first: an alias matches a prefix
  "@slotkeeper/embedded/internal": join(here, "packages", "embedded", "src", "internal", "index.ts"),
  ...Object.fromEntries(
    ["embedded", "testkit", "core", "cli"].map((p) => [`@slotkeeper/${p}`, join(here, "packages", p, "src", p === "cli" ? "main.ts" : "index.ts")])
  )
}
const resolve = { alias: sources }

const projects: Array<TestProjectInlineConfiguration> = [
  { resolve, test: { name: "testkit", root: "./packages/testkit", include: ["test/**/*.test.ts"], ...realPostgres } },
  { resolve, test: { name: "core", root: "./packages/core", include: ["test/**/*.test.ts"], ...realPostgres } },
  { resolve, test: { name: "cli", root: "./packages/cli", include: ["test/**/*.test.ts"], ...realPostgres } }
]

export default projects
