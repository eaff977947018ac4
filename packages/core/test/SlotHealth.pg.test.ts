import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as Lsn from "../src/Lsn.ts"
import * as AdvanceTarget from "../src/slot/AdvanceTarget.ts"
import * as Health from "../src/slot/Health.ts"
import * as PersistentSlot from "../src/slot/PersistentSlot.ts"
import * as Resume from "../src/slot/Resume.ts"
import * as SlotInspector from "../src/slot/SlotInspector.ts"
import { activeOf, eventually, fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

const options = { streamId: "orders", slotPrefix: "slotkeeper_orders", schema: "slotkeeper" }
const thresholds: Health.Thresholds = { retainedWarnBytes: 1n << 30n, safeWalWarnBytes: 0n, wantFailover: false }

describe.each([15, 18])("slot inspection, advance and invalidation on PostgreSQL %i", (major) => {
  const setup = (settings: Record<string, string> = {}) =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major, settings })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming.advisory)
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      const slot = yield* PersistentSlot.ensure(own, sql, options)
      return { pg, a, own, sql, slot, intervals }
    })

  it.live("the guarded advance moves the slot to the target, held back by the window, and a zombie cannot move it", () =>
    Effect.gen(function*() {
      const { a, intervals, own, pg, slot, sql } = yield* setup()
      yield* pg.query("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 1000) g")
      const before = yield* SlotInspector.inspect(sql, slot.slotName)
      const acknowledged = before.currentLsn
      const target = AdvanceTarget.target({ acknowledged, current: before.row!.confirmedFlush!, windowBytes: 4096n })!
      assert.strictEqual(target, acknowledged - 4096n)
      yield* PersistentSlot.advance(own, sql, slot.slotName, target)
      const after = yield* SlotInspector.inspect(sql, slot.slotName)
      assert.strictEqual(after.row!.confirmedFlush, target)
      assert.isTrue(after.row!.confirmedFlush! < acknowledged) // never past what was acknowledged
      assert.isUndefined(AdvanceTarget.target({ acknowledged, current: after.row!.confirmedFlush!, windowBytes: 8192n })) // never backwards
      // a zombie
      yield* startInstance("b", pg.url, intervals, fastTiming.advisory)
      yield* Fiber.interrupt(a.fiber)
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      const refused = yield* Effect.flip(PersistentSlot.advance(own, sql, slot.slotName, acknowledged))
      assert.strictEqual(refused._tag, "OwnershipLost")
      assert.strictEqual((yield* SlotInspector.inspect(sql, slot.slotName)).row!.confirmedFlush, target)
    }))

  it.live("a stalled slot past max_slot_wal_keep_size is reported invalidated: Health says so, Resume refuses", () =>
    Effect.gen(function*() {
      const { pg, slot, sql } = yield* setup({ max_slot_wal_keep_size: "1MB" })
      const healthy = yield* SlotInspector.inspect(sql, slot.slotName)
      assert.strictEqual(Health.assess(slot.slotName, healthy.row, healthy.currentLsn, thresholds).level, "ok")
      assert.isDefined(healthy.row!.safeWalSize)
      // the consumer is stalled while WAL keeps being written: segments past the cap are removed at the checkpoint
      for (let i = 0; i < 4; i++) {
        yield* pg.query(`INSERT INTO items SELECT g, repeat('y', 200) FROM generate_series(${i * 10000 + 1}, ${(i + 1) * 10000}) g`)
        yield* pg.query("SELECT pg_switch_wal()::text")
      }
      yield* pg.query("CHECKPOINT")
      const lost = yield* SlotInspector.inspect(sql, slot.slotName)
      const health = Health.assess(slot.slotName, lost.row, lost.currentLsn, thresholds)
      assert.strictEqual(health.level, "error")
      assert.deepStrictEqual(health.findings.map((f) => f.code), ["SlotInvalidated"])
      assert.strictEqual(lost.row!.walStatus, "lost")
      if (major >= 17) assert.strictEqual(lost.row!.invalidationReason, "wal_removed")
      const decision = Resume.decide(undefined, {
        slotName: slot.slotName, exists: true, confirmedFlush: lost.row!.confirmedFlush,
        invalidationReason: lost.row!.invalidationReason, walStatus: lost.row!.walStatus, conflicting: lost.row!.conflicting
      }, { systemId: "x", timeline: 1, switchPoints: new Map() })
      assert.strictEqual(decision._tag === "Refuse" ? decision.error.reason : decision._tag, "SlotInvalidated")
      assert.match(decision._tag === "Refuse" ? decision.error.message : "", /changes were lost/)
    }))

  it.live("a slot advanced, or dropped and re-created, behind slotkeeper's back is detected: SlotAhead, nothing skipped silently", () =>
    Effect.gen(function*() {
      const { pg, slot, sql } = yield* setup()
      yield* pg.query("INSERT INTO items VALUES (1, 'acknowledged')")
      // the consumer's durable position: what it acknowledged, here where the slot is now
      const start = yield* SlotInspector.inspect(sql, slot.slotName)
      const durable: Resume.DurablePosition = { lsn: start.row!.confirmedFlush!, systemId: "x", timeline: 1, slotName: slot.slotName }
      const server = { systemId: "x", timeline: 1, switchPoints: new Map<number, bigint>() }
      const decideNow = Effect.map(SlotInspector.inspect(sql, slot.slotName), (o) =>
        Resume.decide(durable, {
          slotName: slot.slotName, exists: o.row !== undefined, confirmedFlush: o.row?.confirmedFlush,
          invalidationReason: o.row?.invalidationReason, walStatus: o.row?.walStatus, conflicting: o.row?.conflicting
        }, server))
      assert.strictEqual((yield* decideNow)._tag, "Resume")
      yield* pg.query("INSERT INTO items VALUES (2, 'not yet delivered')")
      // someone advances the slot past it
      yield* pg.query("SELECT end_lsn::text FROM pg_replication_slot_advance($1, pg_current_wal_lsn())", [slot.slotName])
      const ahead = yield* decideNow
      assert.strictEqual(ahead._tag === "Refuse" ? ahead.error.reason : ahead._tag, "SlotAhead")
      // someone drops it and creates it again under the same name: it starts at the current position, also ahead
      yield* pg.query("SELECT pg_drop_replication_slot($1)::text", [slot.slotName])
      yield* pg.query("INSERT INTO items VALUES (3, 'lost with the old slot')")
      yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot($1, 'pgoutput')", [slot.slotName])
      const recreated = yield* decideNow
      assert.strictEqual(recreated._tag === "Refuse" ? recreated.error.reason : recreated._tag, "SlotAhead")
    }))

  it.live("columns the server lacks are absent, not errors", () =>
    Effect.gen(function*() {
      const { slot, sql } = yield* setup()
      const seen = yield* SlotInspector.inspect(sql, slot.slotName)
      assert.strictEqual(seen.serverVersion >= 170000, major >= 17)
      if (major < 17) assert.deepInclude(seen.row!, { invalidationReason: undefined, failover: undefined, synced: undefined })
      else assert.deepInclude(seen.row!, { failover: true, synced: false })
      assert.strictEqual(Lsn.format(seen.row!.confirmedFlush!).includes("/"), true)
    }))
})
