/**
 * Failover (PostgreSQL 18, a failover slot synchronized to a standby by the slot-sync worker): a consumer streams from
 * the primary while a writer commits; once the standby's copy of the slot is sync-ready, the primary is stopped and
 * the standby promoted. Measured from the start of `promote()` until the first change is delivered from the new
 * primary — by a new consumer started as soon as the promotion returned (as an instance retrying the database's
 * address would), with a writer committing on the new primary from that moment. The tests' short ownership timings.
 */
import { Effect, Fiber } from "effect"
import { deliveredAtLeast, deliveredCount, recordingConsumer, streamingWithSyncedStandby } from "../../packages/core/test/fault-helpers.ts"
import { eventually } from "../../packages/core/test/ownership-helpers.ts"
import { cell, table } from "./stats.ts"

const round = Effect.scoped(Effect.gen(function*() {
  const { a, primary, standby, writing } = yield* streamingWithSyncedStandby(20)
  yield* deliveredAtLeast(a, deliveredCount(a) + 20) // the failover happens in the middle of delivery
  yield* primary.stop
  yield* Fiber.interrupt(writing)
  const t0 = performance.now()
  yield* standby.promote
  const promoted = performance.now() - t0
  const b = yield* recordingConsumer("b", standby.url, { firstSession: 1001 })
  const [max] = yield* standby.query<{ n: number | null }>("SELECT max(id) AS n FROM items")
  let next = (max?.n ?? 0) + 1
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(
    Effect.suspend(() => standby.query(`INSERT INTO items VALUES (${next++}, 'after the promotion')`)).pipe(Effect.ignore),
    Effect.sleep("10 millis")
  )))
  yield* eventually(Effect.sync(() => (b.delivered.length > 0 ? true : undefined)), 60_000, "b delivering")
  return { firstChange: performance.now() - t0, promoted }
}))

export const report = (runs: number, log: (text: string) => void) =>
  Effect.gen(function*() {
    const first: Array<number> = []
    const promoted: Array<number> = []
    for (let i = 1; i <= runs; i++) {
      log(`failover: run ${i} of ${runs}`)
      const r = yield* round
      first.push(r.firstChange)
      promoted.push(r.promoted)
    }
    return `## Failover\n\nPostgreSQL 18, the stream's failover slot synchronized to a standby by the slot-sync worker. The primary is stopped mid-stream and the standby promoted; a consumer is started on it as soon as \`pg_promote\` returned. Milliseconds, median (min–max) of ${runs} runs (the tests' short ownership timings; nothing else differs).\n\n${
      table(["measure", "ms"], [["`promote()` (pg_promote, wait)", cell(promoted)], ["promote() → first change delivered from the new primary", cell(first)]])
    }`
  })
