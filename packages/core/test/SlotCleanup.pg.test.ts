import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import * as PersistentSlot from "../src/slot/PersistentSlot.ts"
import * as SlotCleanup from "../src/slot/SlotCleanup.ts"
import { fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

const options = { streamId: "orders", slotPrefix: "slotkeeper_orders", schema: "slotkeeper" }

describe.each([15, 18])("SlotCleanup on PostgreSQL %i", (major) => {
  it.live("lists the stream's leftover incarnations and drops only those, as the owner", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming.advisory)
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      yield* PersistentSlot.ensure(own, sql, options) // incarnation 1
      // incarnation 1 was retired (say, after a resync) but its slot was left behind; incarnation 2 is current
      yield* pg.query("UPDATE slotkeeper.slots SET state = 'retired' WHERE incarnation = 1")
      const current = yield* PersistentSlot.ensure(own, sql, options)
      assert.strictEqual(current.slotName, "slotkeeper_orders_2")
      // neighbours that must never be touched: another stream with an overlapping prefix, another program's slot
      yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_eu_1', 'pgoutput')")
      yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('other_program', 'pgoutput')")

      const { candidates, slots } = yield* SlotCleanup.list(sql, { ...options, olderThanMs: 0 })
      assert.deepStrictEqual(slots.map((s) => [s.slotName, s.current, s.candidate]), [
        ["slotkeeper_orders_1", false, true],
        ["slotkeeper_orders_2", true, false]
      ])
      assert.deepStrictEqual(candidates.map((c) => c.slotName), ["slotkeeper_orders_1"])
      if (major >= 17) assert.isNumber(candidates[0]!.inactiveMs)

      assert.deepStrictEqual(yield* SlotCleanup.drop(own, sql, "slotkeeper", candidates), ["slotkeeper_orders_1"])
      assert.deepStrictEqual(
        (yield* pg.query<{ slot_name: string }>("SELECT slot_name FROM pg_replication_slots ORDER BY 1")).map((r) => r.slot_name),
        ["other_program", "slotkeeper_orders_2", "slotkeeper_orders_eu_1"]
      )
      // a long threshold protects slots whose inactivity the server measures (17+)
      if (major >= 17) {
        yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_7', 'pgoutput')")
        const recent = yield* SlotCleanup.list(sql, { ...options, olderThanMs: 3_600_000 })
        assert.deepStrictEqual(recent.candidates, [])
      }
    }))
})
