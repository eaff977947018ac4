/**
 * Detection: how long after its lock session is lost the holder's dependents are interrupted — an administrator
 * terminates the holder's lock session (`pg_terminate_backend`), and the clock stops when the owned work's scope has
 * closed (its finalizer ran). Advisory mode with the default timings (heartbeat 500 ms): the loss is seen at the next
 * heartbeat, so up to one interval. (A lease has no session to lose; its holder stops at its own deadline, which the
 * handover table shows.) Also: the same with the tests' short timings (heartbeat 200 ms).
 */
import { Deferred, Effect } from "effect"
import { eventually, fastTiming, startInstance, type Interval } from "../../packages/core/test/ownership-helpers.ts"
import { PgCluster } from "@slotkeeper/testkit"
import { cell, table } from "./stats.ts"

const round = (fast: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    const intervals: Array<Interval> = []
    const a = yield* startInstance("a", pg.url, intervals, fast ? fastTiming.advisory : { mode: "advisory" })
    const held = yield* Deferred.await(a.firstHold)
    // at a random point of the heartbeat cycle
    yield* Effect.sleep(`${Math.round(300 + Math.random() * (fast ? 200 : 500))} millis`)
    const t0 = Date.now()
    yield* pg.terminateBackend(held.held.pid!)
    const end = yield* eventually(Effect.sync(() => intervals[0]?.end), 30_000, "the owned work interrupted")
    return end - t0
  }))

export const report = (runs: number, log: (text: string) => void) =>
  Effect.gen(function*() {
    const rows: Array<Array<string>> = []
    for (const fast of [false, true]) {
      const xs: Array<number> = []
      for (let i = 1; i <= runs; i++) {
        log(`detection: ${fast ? "short" : "default"} timings, run ${i} of ${runs}`)
        xs.push(yield* round(fast))
      }
      rows.push([fast ? "heartbeat 200 ms (the tests' timings)" : "heartbeat 500 ms (default)", cell(xs)])
    }
    return `## Detection\n\nAdvisory mode: the holder's lock session is terminated (\`pg_terminate_backend\`); measured until the holder's owned work (its dependents) has been interrupted. Milliseconds, median (min–max) of ${runs} runs; expected: up to one heartbeat interval.\n\n${table(["timing", "session lost → dependents interrupted"], rows)}`
  })
