/**
 * The worked `FencedSink`: a stream delivered into a PostgreSQL target (another server), fenced by the ownership epoch,
 * the position kept in the same transaction as the data. Real servers on both sides.
 */
import { PgClient } from "@effect/sql-pg"
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Redacted, Scope, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { Ownership } from "../src/ownership/Ownership.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import * as FencedSink from "../src/sink/FencedSink.ts"
import * as PgTargetSink from "../src/sink/PgTargetSink.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

const clientFor = (url: string) => Effect.map(Layer.build(PgClient.layer({ url: Redacted.make(url) })), (ctx) => Context.get(ctx, SqlClient.SqlClient))

/** An instance delivering stream "orders" from `source` into the target; its holding periods' fences are recorded. */
const deliverInto = (name: string, source: string, target: PgTargetSink.PgTargetSink, fences: Array<FencedSink.Fence>) =>
  Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: Redacted.make(source), ...fastTiming.advisory })
    const owned = Effect.gen(function*() {
      const own = yield* Ownership
      const fence = { streamId: "orders", epoch: own.epoch }
      fences.push(fence)
      return yield* Delivery.run({ ...deliveryOptions, url: Redacted.make(source), instanceId: name, sql: ownership.sql, checkpoint: target.checkpoint(fence) }, (connection) =>
        Effect.gen(function*() {
          const identity = yield* connection.durable
          return yield* Stream.runForEachArray(connection.events, (events) =>
            Effect.gen(function*() {
              yield* target.sink.write(fence, { events, identity }).pipe(Effect.mapError((e) => (e._tag === "FencedOut" ? FencedSink.asOwnershipLost(e) : e)))
              const last = [...events].reverse().find((e) => e._tag === "Commit")
              if (last?._tag === "Commit") yield* connection.acknowledge(last.endLsn)
            }))
        }))
    })
    return yield* Effect.forkScoped(ownership.supervisor.run(owned))
  })

describe("PgTargetSink (real PostgreSQL 18 source and target)", () => {
  it.live("changes arrive once each, and the next owner resumes from the position kept with them; a deposed owner's batch is refused and changes nothing", () =>
    Effect.gen(function*() {
      const source = yield* PgCluster.make({ major: 18, name: "source" })
      yield* source.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* source.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const targetServer = yield* PgCluster.make({ major: 18, name: "target" })
      const targetSql = yield* clientFor(targetServer.url)
      const target = yield* PgTargetSink.make(targetSql, "mirror")
      const count = Effect.map(targetServer.query<{ n: number; distinct: number }>(
        "SELECT count(*)::int AS n, count(DISTINCT (new->>'id'))::int AS distinct FROM mirror.changes"
      ), (rows) => rows[0]!)

      const fences: Array<FencedSink.Fence> = []
      const scopeA = yield* Scope.make()
      yield* Scope.provide(scopeA)(deliverInto("a", source.url, target, fences))
      yield* eventually(Effect.map(source.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
      yield* source.query("INSERT INTO items SELECT g, 'first' FROM generate_series(1, 50) g")
      for (let id = 51; id <= 60; id++) yield* source.query(`INSERT INTO items VALUES (${id}, 'one by one')`)
      yield* eventually(Effect.map(count, (c) => (c.n >= 60 ? true : undefined)), 20_000, "60 changes in the target")
      yield* Scope.close(scopeA, Exit.void)

      // the next owner resumes from the target's own position: nothing twice
      const scopeB = yield* Scope.make()
      yield* Scope.provide(scopeB)(deliverInto("b", source.url, target, fences))
      for (let id = 61; id <= 70; id++) yield* source.query(`INSERT INTO items VALUES (${id}, 'after the restart')`)
      yield* eventually(Effect.map(count, (c) => (c.n >= 70 ? true : undefined)), 20_000, "70 changes in the target")
      assert.deepStrictEqual(yield* count, { n: 70, distinct: 70 })
      const [epochB] = fences.slice(-1)
      assert.isAbove(epochB!.epoch, fences[0]!.epoch)
      assert.deepStrictEqual(yield* targetServer.query("SELECT epoch::text AS epoch FROM mirror.fence"), [{ epoch: String(epochB!.epoch) }])

      yield* Scope.close(scopeB, Exit.void)
      // a's last batch, delivered late (a paused owner waking up): refused, and nothing changed
      const before = yield* targetServer.query<{ lsn: string }>("SELECT lsn::text AS lsn FROM mirror.positions")
      const stale = yield* Effect.flip(target.sink.write(fences[0]!, {
        events: [
          { _tag: "Begin", xid: 1, commitLsn: 0xFFFF0000n, commitTime: "" },
          { _tag: "Change", op: "insert", schema: "public", table: "items", xid: 1, commitLsn: 0xFFFF0000n, commitTime: "", seq: 1, new: { id: 999 }, old: undefined, oldIsKey: false, unchanged: [], columns: ["id"], plainJson: true },
          { _tag: "Commit", xid: 1, commitLsn: 0xFFFF0000n, endLsn: 0xFFFF0030n, commitTime: "", changes: 1 }
        ],
        identity: { slotName: "slotkeeper_orders_1", systemId: "x", timeline: 1 }
      }))
      assert.strictEqual(stale._tag, "FencedOut")
      assert.match(stale.message, new RegExp(`refused epoch ${fences[0]!.epoch} of stream orders: epoch ${epochB!.epoch} has written there`))
      assert.deepStrictEqual(yield* count, { n: 70, distinct: 70 })
      assert.deepStrictEqual(yield* targetServer.query<{ lsn: string }>("SELECT lsn::text AS lsn FROM mirror.positions"), before)
      // and, given to the supervisor, a refusal is the loss of ownership
      if (stale._tag === "FencedOut") assert.strictEqual(FencedSink.asOwnershipLost(stale)._tag, "OwnershipLost")
    }))
})
