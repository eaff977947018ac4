import { defineConfig } from "vitest/config"
import projects from "./vitest.workspace.ts"

export default defineConfig({
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
