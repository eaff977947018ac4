import { FaultProxy, PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { checkAll, deliveredAtLeast, deliveredCount, recordingConsumer, streamingWithSyncedStandby } from "./fault-helpers.ts"
import { eventually } from "./ownership-helpers.ts"


describe("Delivery across a failover (real PostgreSQL 18, failover slot synchronized to a standby)", () => {
  it.live("writes throughout, fail over, write: resumed on the promoted standby from the synchronized slot; nothing lost, nothing acknowledged twice (DeliveryCheck)", () =>
    Effect.gen(function*() {
      const { primary, standby, a, writing } = yield* streamingWithSyncedStandby(60) // the failover happens in the middle of delivery
      yield* primary.stop // the writer's inserts fail from here on
      yield* Fiber.interrupt(writing)
      yield* standby.promote
      const b = yield* recordingConsumer("b", standby.url, { firstSession: 1001 })
      const before = (yield* standby.query<{ n: number }>("SELECT max(id) AS n FROM items"))[0]!.n
      yield* standby.query(`INSERT INTO items SELECT g, 'after the promotion' FROM generate_series(${before + 1}, ${before + 20}) g`)
      // every row the new primary has (the truth after a failover), delivered by a or b; nothing durably acknowledged twice
      const both = {
        ...b,
        get delivered() {
          return [...a.delivered, ...b.delivered]
        },
        get sessionStarts() {
          return new Map([...a.sessionStarts, ...b.sessionStarts])
        }
      }
      const { committed, report } = yield* checkAll(standby, both)
      assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
      assert.isAtLeast(committed.length, 80)
      console.log(`failover: ${committed.length} rows, a delivered ${deliveredCount(a)}, b started at ${Math.min(...b.delivered.map((d) => d.key))}, ${report.redelivered} redelivered`)
    }))
})

describe.each(["temporary", "persistent"] as const)("Delivery with a standby behind (real PostgreSQL 18, %s slot mode)", (mode) => {
  it.live("the standby's link frozen, 100 rows committed, the primary dies, the standby is promoted, 100 more rows: nothing delivered that the new primary does not have, nothing it has lost", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* primary.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      // the standby reaches the primary through a proxy: its link can be frozen
      const link = yield* FaultProxy.make({ targetPort: primary.port })
      const standby = yield* Standby.make(primary, { primaryPort: link.port })
      const a = yield* recordingConsumer("a", primary.url, { delivery: { heartbeatInterval: "300 millis", mode } })
      yield* eventually(Effect.map(primary.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary AND failover"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the failover slot")
      for (let id = 1; id <= 20; id++) yield* primary.query(`INSERT INTO items VALUES (${id}, 'before')`)
      yield* deliveredAtLeast(a, 20)
      // a safe failover target first: the standby's copy of the slot sync-ready
      yield* eventually(Effect.gen(function*() {
        yield* primary.query("SELECT pg_log_standby_snapshot()::text")
        yield* Effect.sleep("200 millis")
        const rows = yield* standby.query<{ ready: boolean }>(
          "SELECT synced AND NOT temporary AND invalidation_reason IS NULL AS ready FROM pg_replication_slots WHERE slot_name = 'slotkeeper_orders_1'"
        )
        return rows[0]?.ready === true ? true : undefined
      }), 90_000, "the standby's slot sync-ready")

      yield* link.setMode("blackhole") // the standby receives nothing from here on
      for (let id = 1001; id <= 1100; id++) yield* primary.query(`INSERT INTO items VALUES (${id}, 'never reaches the standby')`)
      yield* Effect.sleep("3 seconds") // time enough to deliver them, were they not held back
      yield* primary.kill
      yield* standby.promote

      const b = yield* recordingConsumer("b", standby.url, { firstSession: 1001, delivery: { mode } })
      for (let id = 2001; id <= 2100; id++) yield* standby.query(`INSERT INTO items VALUES (${id}, 'after the promotion')`)
      const onNewPrimary = new Set((yield* standby.query<{ id: number }>("SELECT id FROM items")).map((r) => r.id))
      yield* eventually(Effect.sync(() => ([...onNewPrimary].every((id) => b.delivered.some((d) => d.key === id) || a.delivered.some((d) => d.key === id)) ? true : undefined)),
        60_000, "every row of the new primary delivered").pipe(Effect.exit)
      const delivered = new Set([...a.delivered, ...b.delivered].map((d) => d.key))
      const phantoms = [...delivered].filter((id) => !onNewPrimary.has(id))
      const lost = [...onNewPrimary].filter((id) => !delivered.has(id))
      assert.deepStrictEqual({ phantoms: phantoms.length, lost: lost.length }, { phantoms: 0, lost: 0 })
      assert.isFalse(onNewPrimary.has(1001)) // the frozen link really kept them from the standby
    }))
})
