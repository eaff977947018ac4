import { PgClient } from "@effect/sql-pg"
import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as FailoverCheck from "../src/slot/FailoverCheck.ts"
import { eventually } from "./ownership-helpers.ts"
import { slotOf, startConsumer } from "./delivery-helpers.ts"

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe("Delivery across a failover (real PostgreSQL 18, failover slot synchronized to a standby)", () => {
  it.live("write, fail over, write: the consumer resumes on the promoted standby from the synchronized slot and no change is lost", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* primary.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      // The slotsync worker, as in production. (pg_sync_replication_slots() on demand cannot catch up on a busy primary: each
      // call drops its not-yet-safe copy again, and every checkpoint save takes a new xid past the slot's catalog_xmin.)
      const standby = yield* Standby.make(primary)
      const a = yield* startConsumer("a", primary.url, { delivery: { heartbeatInterval: "300 millis" } })
      const slot = yield* eventually(slotOf(a), 20_000, "the slot")
      assert.isTrue(slot.failover)
      const insert = (server: { query: (sql: string) => Effect.Effect<unknown, unknown> }, from: number, to: number) =>
        Effect.gen(function*() {
          for (let id = from; id <= to; id++) yield* server.query(`INSERT INTO items VALUES (${id}, 'row ${id}')`)
        })
      yield* insert(primary, 1, 5)
      yield* eventually(Effect.sync(() => (a.ids().length >= 5 ? true : undefined)), 20_000, "a: rows 1-5")
      yield* insert(primary, 6, 10)
      const s = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(standby.url) })), SqlClient.SqlClient)
      // A freshly attached standby is a safe target only once the slot's restart_lsn moved past a running-transactions
      // snapshot the standby has seen. The background writer logs one every 15 s; the test logs them itself.
      const synced = Effect.gen(function*() {
        yield* Effect.sleep("200 millis")
        yield* primary.query("SELECT pg_log_standby_snapshot()::text")
        return yield* FailoverCheck.standby(s, slot.slotName)
      })
      yield* eventually(Effect.map(synced, (r) => (r.ok && r.findings.length === 0 ? true : undefined)), 90_000,
        "the standby's copy of the slot to be sync-ready")
      yield* insert(primary, 11, 15) // delivered to a or not, acknowledged or not: the failover happens now
      yield* standby.waitForReplay
      yield* primary.stop
      yield* standby.promote
      const b = yield* startConsumer("b", standby.url)
      yield* insert(standby, 16, 20)
      yield* eventually(Effect.sync(() => (b.ids().includes(20) ? true : undefined)), 30_000, "b: row 20 from the new primary")
      const union = [...new Set([...a.ids(), ...b.ids()])].sort((x, y) => x - y)
      assert.deepStrictEqual(union, range(1, 20), "no change lost across the promotion")
      // b repeats nothing: each change once from b, and only what a's replicated checkpoint did not cover
      assert.deepStrictEqual(b.ids(), [...new Set(b.ids())].sort((x, y) => x - y))
      assert.isAtLeast(b.ids()[0]!, 6)
      console.log(`failover: a delivered ${a.ids().length}, b started at row ${b.ids()[0]}`)
    }))
})
