/**
 * Global setup of the test suite (see vitest.config.ts).
 *
 * Before: gives this run an id (SLOTKEEPER_TESTKIT_RUN, inherited by the test workers, so every server folder of
 * this run lives under one folder) and reaps servers left by earlier runs whose process was killed.
 * After: every server the tests started must be stopped and its folder removed by its scope. Anything left is
 * reported, cleaned up, and fails the run.
 */
import { randomBytes } from "node:crypto"
import { Leftovers } from "@slotkeeper/testkit"

export default async function setup() {
  const run = `run-${process.pid}-${randomBytes(3).toString("hex")}`
  process.env.SLOTKEEPER_TESTKIT_RUN = run
  const reaped = await Leftovers.reapOrphans()
  if (reaped.length > 0) {
    console.warn(`[testkit] removed ${reaped.length} server folder(s) left by killed earlier runs`)
  }
  return async () => {
    const left = Leftovers.find(run)
    for (const l of left) await Leftovers.remove(l)
    Leftovers.removeRun(run)
    if (left.length > 0) {
      const list = left.map((l) => `  ${l.dir}${l.postmasterPid !== undefined ? ` (postmaster ${l.postmasterPid} still running)` : ""}`).join("\n")
      throw new Error(`[testkit] the suite left ${left.length} server folder(s) behind (now removed):\n${list}`)
    }
    console.log(`[testkit] leftover check: no server and no server folder left behind by run ${run}`)
  }
}
