/**
 * A backfill's progress in the source database (real PostgreSQL, both lock modes): requests are plain inserts that
 * anyone may make (one running backfill per table), progress moves only by the owner's guarded writes, and a deposed
 * owner's write is refused and changes nothing.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as BackfillProgress from "../src/backfill/BackfillProgress.ts"
import type { LockMode } from "../src/ownership/OwnershipConfig.ts"
import { activeOf, eventually, fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

const modes: ReadonlyArray<LockMode> = ["advisory", "lease"]

describe.each(modes)("BackfillProgress (%s lock, real PostgreSQL)", (mode) => {
  it.live("requests make one running backfill per table; the owner advances and completes it; a deposed owner's write is refused and changes nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming[mode])
      const ownA = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql

      // anyone may ask; a second request of the same table while it runs is the same backfill
      const first = yield* BackfillProgress.request(sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      const again = yield* BackfillProgress.request(sql, "slotkeeper", "orders", { schema: "public", table: "items", where: "id > 5" })
      assert.strictEqual(again.id, first.id)
      const other = yield* BackfillProgress.request(sql, "slotkeeper", "orders", { schema: "sales", table: "Order Lines", where: "id > 5" })
      assert.notStrictEqual(other.id, first.id)
      assert.deepStrictEqual([first.state, first.lastKey, first.rows, first.chunks], ["running", undefined, 0, 0])

      // the owner's progress
      const writerA = BackfillProgress.writer(ownA, sql, "slotkeeper")
      yield* writerA.advance(first.id, ["1000", "it's \"quoted\""], 1000)
      yield* writerA.advance(first.id, ["2000", "b"], 1000)
      const [saved] = (yield* BackfillProgress.list(sql, "slotkeeper", "orders")).filter((b) => b.id === first.id)
      assert.deepStrictEqual([saved!.lastKey, saved!.rows, saved!.chunks, saved!.state], [["2000", "b"], 2000, 2, "running"])

      // a goes away without releasing; b owns the stream (a newer epoch)
      const b = yield* startInstance("b", pg.url, intervals, fastTiming[mode])
      yield* Fiber.interrupt(a.fiber)
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      const refused = yield* Effect.flip(writerA.advance(first.id, ["3000", "c"], 1000))
      assert.strictEqual(refused._tag, "OwnershipLost")
      const refusedDone = yield* Effect.flip(writerA.complete(first.id))
      assert.strictEqual(refusedDone._tag, "OwnershipLost")
      const [unchanged] = (yield* BackfillProgress.list(sql, "slotkeeper", "orders")).filter((x) => x.id === first.id)
      assert.deepStrictEqual([unchanged!.lastKey, unchanged!.rows, unchanged!.state], [["2000", "b"], 2000, "running"])

      // the new owner resumes from what was saved, and completes it; a new request then starts a new backfill
      const ownB = yield* Deferred.await(b.firstHold)
      const writerB = BackfillProgress.writer(ownB, b.ownership.sql, "slotkeeper")
      yield* writerB.advance(first.id, ["3000", "c"], 500)
      yield* writerB.complete(first.id)
      const done = yield* BackfillProgress.list(b.ownership.sql, "slotkeeper", "orders", "done")
      assert.deepStrictEqual(done.map((x) => [x.id, x.rows, x.chunks, x.lastKey]), [[first.id, 2500, 3, ["3000", "c"]]])
      const next = yield* BackfillProgress.request(b.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      assert.notStrictEqual(next.id, first.id)
      const [epochs] = yield* pg.query<{ n: number }>(`SELECT count(DISTINCT epoch)::int AS n FROM slotkeeper.backfills WHERE backfill_id = '${first.id}'`)
      assert.strictEqual(epochs!.n, 1) // the last writer's epoch
    }))
})
