/**
 * Measures ownership handover on real PostgreSQL (the test kit): how long the holder takes to notice a loss, and how
 * long until the other instance is active, after a graceful release, a terminated lock session and a blackholed path.
 *
 *   npm run bench:ownership                      # default timings, 3 rounds per scenario and mode
 *   TIMING=fast ROUNDS=5 npm run bench:ownership # the tests' short timings
 *
 * Prints median / min / max wall-clock milliseconds.
 */
import { Effect, Fiber } from "effect"
import { Leftovers } from "@slotkeeper/testkit"
import type { LockMode, OwnershipOptions } from "../packages/core/src/ownership/OwnershipConfig.ts"
import { activeOf, eventually, fastTiming, holderBehindProxy, startInstance } from "../packages/core/test/ownership-helpers.ts"

const rounds = Number(process.env.ROUNDS ?? 3)
const timingName = process.env.TIMING === "fast" ? "fast" : "default"
const timing = (mode: LockMode): Partial<OwnershipOptions> => (timingName === "fast" ? fastTiming[mode] : { mode })

const stats = (xs: Array<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
  return `${median.toFixed(0).padStart(7)} ${s[0]!.toFixed(0).padStart(7)} ${s.at(-1)!.toFixed(0).padStart(7)}`
}

type Scenario = "release" | "terminate" | "blackhole"

const round = (mode: LockMode, scenario: Scenario) =>
  Effect.scoped(Effect.gen(function*() {
    const { a, held, intervals, pg, proxy } = yield* holderBehindProxy(timing(mode))
    yield* startInstance("b", pg.url, intervals, timing(mode))
    yield* Effect.sleep("1500 millis")
    const t0 = Date.now()
    if (scenario === "release") yield* Fiber.interrupt(a.fiber)
    if (scenario === "terminate") yield* pg.terminateBackend(held.held.pid!)
    if (scenario === "blackhole") yield* proxy.setMode("blackhole")
    const b = yield* eventually(activeOf(intervals, "b"), 60_000, "b active")
    const aEnd = yield* eventually(Effect.sync(() => intervals.find((i) => i.instance === "a")?.end), 60_000, "a stopped")
    yield* proxy.setMode("pass")
    return { noticed: aEnd - t0, takeover: b.start - t0, overlap: Math.max(0, aEnd - b.start), config: a.ownership.config }
  }))

const program = Effect.gen(function*() {
  console.log(`timing=${timingName}, rounds=${rounds}, node ${process.version}`)
  console.log("mode      scenario    measure                      median     min     max  (ms)")
  for (const mode of ["advisory", "lease"] as const) {
    for (const scenario of (mode === "advisory" ? ["release", "terminate", "blackhole"] : ["release", "blackhole"]) as Array<Scenario>) {
      const results = []
      for (let i = 0; i < rounds; i++) results.push(yield* round(mode, scenario))
      const c = results[0]!.config
      const label = `${mode.padEnd(9)} ${scenario.padEnd(11)}`
      console.log(`${label} holder noticed the loss      ${stats(results.map((r) => r.noticed))}`)
      console.log(`${label} other instance active        ${stats(results.map((r) => r.takeover))}`)
      if (scenario !== "release") console.log(`${label} believed-active overlap      ${stats(results.map((r) => r.overlap))}`)
      if (scenario === "blackhole") {
        console.log(`${label} (check every ${c.checkIntervalMs} ms, detection deadline ${c.lossDeadlineMs} ms, server release bound ${c.serverReleaseBoundMs} ms)`)
      }
    }
  }
})

await Effect.runPromise(program)
Leftovers.removeRun(Leftovers.runId())
