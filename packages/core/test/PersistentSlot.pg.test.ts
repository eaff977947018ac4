import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as PersistentSlot from "../src/slot/PersistentSlot.ts"
import { activeOf, eventually, fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

const options = { streamId: "orders", slotPrefix: "slotkeeper_orders", schema: "slotkeeper" }

describe.each([15, 18])("PersistentSlot on PostgreSQL %i", (major) => {
  const setup = Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major })
    const intervals: Array<Interval> = []
    const a = yield* startInstance("a", pg.url, intervals, fastTiming.advisory)
    const own = yield* Deferred.await(a.firstHold)
    const slots = pg.query<{ slot_name: string; failover: boolean | null }>(
      major >= 17 ? "SELECT slot_name, failover FROM pg_replication_slots ORDER BY 1" : "SELECT slot_name, NULL::bool AS failover FROM pg_replication_slots ORDER BY 1")
    return { pg, a, own, sql: a.ownership.sql, slots, intervals }
  })

  it.live("created on the first run (a failover slot on 17+, reported unavailable before), adopted afterwards", () =>
    Effect.gen(function*() {
      const { own, slots, sql } = yield* setup
      const first = yield* PersistentSlot.ensure(own, sql, options)
      assert.deepInclude(first, { slotName: "slotkeeper_orders_1", incarnation: 1, created: true, failover: major >= 17 })
      if (major >= 17) assert.isUndefined(first.failoverUnavailable)
      else assert.match(first.failoverUnavailable ?? "", /failover slots need PostgreSQL 17\+/)
      assert.deepStrictEqual(yield* slots, [{ slot_name: "slotkeeper_orders_1", failover: major >= 17 ? true : null }])
      const again = yield* PersistentSlot.ensure(own, sql, options)
      assert.deepInclude(again, { slotName: "slotkeeper_orders_1", incarnation: 1, created: false })
      assert.deepStrictEqual((yield* slots).length, 1)
    }))

  it.live("a slot dropped behind slotkeeper's back is SlotMissing, and nothing is re-created", () =>
    Effect.gen(function*() {
      const { own, pg, slots, sql } = yield* setup
      yield* PersistentSlot.ensure(own, sql, options)
      yield* pg.query("SELECT pg_drop_replication_slot('slotkeeper_orders_1')::text")
      const error = yield* Effect.flip(PersistentSlot.ensure(own, sql, options))
      assert.deepInclude(error, { _tag: "SlotError", reason: "SlotMissing", slotName: "slotkeeper_orders_1" })
      assert.match(error.message, /not re-created under the same name/)
      assert.deepStrictEqual(yield* slots, [])
    }))

  it.live("a slot replaced behind slotkeeper's back by one of another kind is SlotMismatch, never adopted", () =>
    Effect.gen(function*() {
      const { own, pg, sql } = yield* setup
      yield* PersistentSlot.ensure(own, sql, options)
      yield* pg.query("SELECT pg_drop_replication_slot('slotkeeper_orders_1')::text")
      yield* pg.query("SELECT slot_name FROM pg_create_physical_replication_slot('slotkeeper_orders_1')")
      const error = yield* Effect.flip(PersistentSlot.ensure(own, sql, options))
      assert.deepInclude(error, { _tag: "SlotError", reason: "SlotMismatch", slotName: "slotkeeper_orders_1" })
      assert.match(error.message, /a physical slot/)
    }))

  it.live("a crash between reserving and creating: the reserved name is abandoned, never reused", () =>
    Effect.gen(function*() {
      const { own, pg, slots, sql } = yield* setup
      yield* PersistentSlot.ensureCatalog(sql, "slotkeeper")
      yield* pg.query("INSERT INTO slotkeeper.slots (stream_id, incarnation, slot_name, state, failover) VALUES ('orders', 1, 'slotkeeper_orders_1', 'creating', false)")
      const slot = yield* PersistentSlot.ensure(own, sql, options)
      assert.deepInclude(slot, { slotName: "slotkeeper_orders_2", incarnation: 2, created: true })
      assert.deepStrictEqual(yield* pg.query("SELECT incarnation, state FROM slotkeeper.slots ORDER BY 1"), [
        { incarnation: 1, state: "abandoned" },
        { incarnation: 2, state: "active" }
      ])
      assert.deepStrictEqual((yield* slots).map((s) => s.slot_name), ["slotkeeper_orders_2"])
    }))

  it.live("a slot under the next name that the catalog does not know is not adopted", () =>
    Effect.gen(function*() {
      const { own, pg, sql } = yield* setup
      yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_1', 'pgoutput')")
      const error = yield* Effect.flip(PersistentSlot.ensure(own, sql, options))
      assert.deepInclude(error, { _tag: "SlotError", reason: "SlotNameTaken", slotName: "slotkeeper_orders_1" })
    }))

  it.live("an instance that lost ownership creates nothing", () =>
    Effect.gen(function*() {
      const { a, intervals, own, pg, slots, sql } = yield* setup
      yield* startInstance("b", pg.url, intervals, fastTiming.advisory)
      yield* Fiber.interrupt(a.fiber)
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      const error = yield* Effect.flip(PersistentSlot.ensure(own, sql, options))
      assert.strictEqual(error._tag, "OwnershipLost")
      assert.deepStrictEqual(yield* slots, [])
    }))
})
