import { PgClient } from "@effect/sql-pg"
import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as FailoverCheck from "../src/slot/FailoverCheck.ts"
import { eventually } from "./ownership-helpers.ts"
import { checkAll, deliveredAtLeast, deliveredCount, recordingConsumer, startWriter } from "./fault-helpers.ts"


describe("Delivery across a failover (real PostgreSQL 18, failover slot synchronized to a standby)", () => {
  it.live("writes throughout, fail over, write: resumed on the promoted standby from the synchronized slot; nothing lost, nothing acknowledged twice (DeliveryCheck)", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* primary.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      // The slotsync worker, as in production. (pg_sync_replication_slots() on demand cannot catch up on a busy primary: each
      // call drops its not-yet-safe copy again, and every checkpoint save takes a new xid past the slot's catalog_xmin.)
      const standby = yield* Standby.make(primary)
      const a = yield* recordingConsumer("a", primary.url, { delivery: { heartbeatInterval: "300 millis" } })
      yield* eventually(Effect.map(primary.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary AND failover"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the failover slot")
      const writing = yield* Effect.forkScoped(startWriter(primary).pipe(Effect.andThen(Effect.never)))
      yield* deliveredAtLeast(a, 20)
      const s = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(standby.url) })), SqlClient.SqlClient)
      // A freshly attached standby is a safe target only once the slot's restart_lsn moved past a running-transactions
      // snapshot the standby has seen. The background writer logs one every 15 s; the test logs them itself.
      const synced = Effect.gen(function*() {
        yield* Effect.sleep("200 millis")
        yield* primary.query("SELECT pg_log_standby_snapshot()::text")
        return yield* FailoverCheck.standby(s, "slotkeeper_orders_1")
      })
      yield* eventually(Effect.map(synced, (r) => (r.ok && r.findings.length === 0 ? true : undefined)), 90_000,
        "the standby's copy of the slot to be sync-ready")
      yield* deliveredAtLeast(a, 60) // more, delivered and acknowledged or not: the failover happens in the middle of it
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
