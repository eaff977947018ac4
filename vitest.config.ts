import { defineConfig } from "vitest/config"
import projects, { sources } from "./vitest.workspace.ts"

export default defineConfig({
  // Inside the workspace the packages resolve to their TypeScript sources (their `source` export condition, which the
  // toolchain also gives Node for every process it starts); installed, they resolve to their built `dist/`.
  resolve: { alias: sources },
  test: {
    projects,
    // Starts every run with orphaned servers of killed earlier runs reaped, and fails the run if any server or
    // server folder of this run is left behind at the end.
    globalSetup: ["./scripts/vitest-global-setup.ts"],
    // Test files with no test in them are an error, not a pass.
    passWithNoTests: false,
    reporters: ["default", "./scripts/vitest-summary-reporter.ts"]
  }
})
