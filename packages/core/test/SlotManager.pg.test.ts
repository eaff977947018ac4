import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Redacted, Ref, SubscriptionRef } from "effect"
import * as Lsn from "../src/Lsn.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as SlotInspector from "../src/slot/SlotInspector.ts"
import * as SlotManager from "../src/slot/SlotManager.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

const slotOptions = { streamId: "orders", slotPrefix: "slotkeeper_orders", schema: "slotkeeper", advanceInterval: "100 millis", healthInterval: "200 millis" } as const

const setup = (settings: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18, settings })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    const stream = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(pg.url), ...fastTiming.advisory })
    const acked = yield* Ref.make<SlotManager.Acknowledged | undefined>(undefined)
    const state = yield* SlotManager.makeState
    const confirmed = Effect.map(SlotInspector.inspect(stream.sql, "slotkeeper_orders_1"), (o) => o.row?.confirmedFlush)
    const currentLsn = Effect.map(pg.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn"), (r) => Lsn.parseUnsafe(r[0]!.lsn))
    return { pg, stream, acked, state, confirmed, currentLsn }
  })

describe("SlotManager (real PostgreSQL 18)", () => {
  it.live("the slot follows acknowledgements, minus the window, never past an unacknowledged change; a last advance at shutdown", () =>
    Effect.gen(function*() {
      const { acked, confirmed, currentLsn, pg, state, stream } = yield* setup()
      const run = yield* Effect.forkChild(stream.supervisor.run(SlotManager.run({ ...slotOptions, sql: stream.sql, acknowledged: Ref.get(acked), windowBytes: 64n }, state)), { startImmediately: true })
      yield* eventually(SubscriptionRef.get(state.slot), 10_000, "the slot")
      const start = (yield* confirmed)!
      yield* pg.query("INSERT INTO items VALUES (1, 'acknowledged')")
      const first = yield* currentLsn
      yield* Ref.set(acked, { lsn: first, slotName: "slotkeeper_orders_1" })
      yield* eventually(Effect.map(confirmed, (c) => (c === first - 64n ? c : undefined)), 5_000, "the slot at the first acknowledgement minus the window")
      assert.isTrue(first - 64n > start)
      // changes nobody acknowledged: the slot stays where it is, however long we wait
      yield* pg.query("INSERT INTO items VALUES (2, 'not acknowledged')")
      yield* Effect.sleep("600 millis")
      assert.strictEqual(yield* confirmed, first - 64n)
      // acknowledged just before stopping: the last advance at shutdown takes it
      const second = yield* currentLsn
      yield* Ref.set(acked, { lsn: second, slotName: "slotkeeper_orders_1" })
      yield* Fiber.interrupt(run)
      assert.strictEqual(yield* confirmed, second - 64n)
    }))

  it.live("policy fail: an invalidated slot fails the owned work with what was lost and what to do", () =>
    Effect.gen(function*() {
      const { acked, pg, state, stream } = yield* setup({ max_slot_wal_keep_size: "1MB" })
      const run = yield* Effect.forkChild(stream.supervisor.run(SlotManager.run({ ...slotOptions, sql: stream.sql, acknowledged: Ref.get(acked) }, state)), { startImmediately: true })
      yield* eventually(SubscriptionRef.get(state.slot), 10_000, "the slot")
      for (let i = 0; i < 4; i++) {
        yield* pg.query(`INSERT INTO items SELECT g, repeat('y', 200) FROM generate_series(${i * 10000 + 1}, ${(i + 1) * 10000}) g`)
        yield* pg.query("SELECT pg_switch_wal()::text")
      }
      yield* pg.query("CHECKPOINT")
      const exit = yield* Fiber.await(run)
      assert.isTrue(Exit.isFailure(exit))
      const message = Exit.isFailure(exit) ? String(exit.cause) : ""
      assert.match(message, /invalidated \(wal_removed\)/)
      assert.match(message, /consumers need a resync/)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.deepInclude(error as object, { _tag: "SlotError", reason: "SlotInvalidated", slotName: "slotkeeper_orders_1" })
    }))

  it.live("policy recreate: a slot dropped behind slotkeeper's back is replaced by a new incarnation, and a resync is required", () =>
    Effect.gen(function*() {
      const { acked, pg, state, stream } = yield* setup()
      yield* Effect.forkChild(stream.supervisor.run(SlotManager.run({ ...slotOptions, sql: stream.sql, acknowledged: Ref.get(acked), onSlotLost: "recreate" }, state)), { startImmediately: true })
      yield* eventually(SubscriptionRef.get(state.slot), 10_000, "the slot")
      yield* pg.query("SELECT pg_drop_replication_slot('slotkeeper_orders_1')::text")
      const resync = yield* eventually(SubscriptionRef.get(state.resyncRequired), 10_000, "a resync event")
      assert.deepInclude(resync, { lostSlot: "slotkeeper_orders_1", newSlot: "slotkeeper_orders_2" })
      assert.deepStrictEqual(yield* pg.query("SELECT incarnation, state FROM slotkeeper.slots ORDER BY 1"), [
        { incarnation: 1, state: "retired" },
        { incarnation: 2, state: "active" }
      ])
      assert.strictEqual((yield* SubscriptionRef.get(state.slot))?.slotName, "slotkeeper_orders_2")
      // an acknowledgement of the lost slot does not move the new one, however far ahead it is
      const fresh = (yield* SlotInspector.inspect(stream.sql, "slotkeeper_orders_2")).row!.confirmedFlush!
      yield* pg.query("INSERT INTO items VALUES (9, 'only on the new slot')")
      yield* Ref.set(acked, { lsn: fresh + 1_000_000n, slotName: "slotkeeper_orders_1" })
      yield* Effect.sleep("500 millis")
      assert.strictEqual((yield* SlotInspector.inspect(stream.sql, "slotkeeper_orders_2")).row!.confirmedFlush, fresh)
    }))

  it.live("a failover slot moves only once the standbys in synchronized_standby_slots have flushed the checkpoint's save", () =>
    Effect.gen(function*() {
      const { acked, confirmed, currentLsn, pg, state, stream } = yield* setup()
      // a standby's physical slot that has not flushed much yet (it reserves WAL from now on)
      yield* pg.query("SELECT slot_name FROM pg_create_physical_replication_slot('lagging_standby', true)")
      yield* pg.setConfig("synchronized_standby_slots", "lagging_standby")
      yield* Effect.forkChild(stream.supervisor.run(SlotManager.run({ ...slotOptions, sql: stream.sql, acknowledged: Ref.get(acked) }, state)), { startImmediately: true })
      const slot = yield* eventually(SubscriptionRef.get(state.slot), 10_000, "the slot")
      assert.isTrue(slot.failover)
      const start = (yield* confirmed)!
      yield* pg.query("INSERT INTO items VALUES (1, 'acknowledged')")
      const position = yield* currentLsn
      yield* pg.query("INSERT INTO items VALUES (2, 'the checkpoint save')")
      const savedAt = yield* currentLsn
      // the standby has flushed the acknowledged position (all PostgreSQL itself waits for), not the save after it
      yield* pg.query("SELECT end_lsn::text FROM pg_replication_slot_advance('lagging_standby', $1::pg_lsn)", [Lsn.format(position)])
      yield* Ref.set(acked, { lsn: position, slotName: slot.slotName, savedAt })
      yield* Effect.sleep("600 millis")
      assert.strictEqual(yield* confirmed, start) // a promoted standby would have the slot at `position` and an older checkpoint
      yield* pg.query("SELECT end_lsn::text FROM pg_replication_slot_advance('lagging_standby', $1::pg_lsn)", [Lsn.format(savedAt)])
      yield* eventually(Effect.map(confirmed, (c) => (c === position ? c : undefined)), 5_000, "the slot at the acknowledged position")
      // an inactive standby slot stalls decoding silently: the status says so
      const report = yield* eventually(SubscriptionRef.get(state.failover), 5_000, "the failover report in the status")
      assert.deepInclude(report.findings.map((f) => f.code), "StandbySlotInactive")
      yield* pg.setConfig("synchronized_standby_slots", null)
    }))
})
