import { PgCluster } from "@slotkeeper/testkit"
import pg_ from "pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Result, Stream, SubscriptionRef } from "effect"
import { PgClient } from "@effect/sql-pg"
import { Context, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Delivery from "../src/replication/Delivery.ts"
import * as Desired from "../src/publication/Desired.ts"
import * as PgPublication from "../src/publication/PgPublication.ts"
import * as Subscription from "../src/publication/Subscription.ts"
import * as PublicationCatalog from "../src/publication/PublicationCatalog.ts"
import * as Validation from "../src/publication/Validation.ts"
import { activeOf, eventually, type Interval, startInstance, fastTiming } from "./ownership-helpers.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { publicationOptions, publicationTables, startManager } from "./publication-helpers.ts"

const tables = (pg: { query: (sql: string) => Effect.Effect<unknown, unknown> }, names: ReadonlyArray<string>) =>
  Effect.forEach(names, (t) => pg.query(`CREATE TABLE ${t} (id int PRIMARY KEY, a int, b text)`), { discard: true })

const clientFor = (url: string) => Effect.map(Layer.build(PgClient.layer({ url: Redacted.make(url) })), (ctx) => Context.get(ctx, SqlClient.SqlClient))

describe("PublicationManager (real PostgreSQL 18)", () => {
  it.live("property: after random batches of adds and removes, the publication is exactly what the live subscriptions need", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      const names = ["t0", "t1", "t2", "t3"]
      yield* tables(pg, names)
      const { manager } = yield* startManager("a", pg.url)
      const sql = yield* clientFor(pg.url)
      let seed = 20261121
      const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
      const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(random() * xs.length)]!
      const model = new Map<string, Subscription.Subscription>()
      let next = 0
      for (let round = 0; round < 20; round++) {
        const requests: Array<Effect.Effect<void, unknown>> = []
        const batch = 1 + Math.floor(random() * 4)
        for (let i = 0; i < batch; i++) {
          if (model.size > 0 && random() < 0.4) {
            const id = pick([...model.keys()])
            model.delete(id)
            requests.push(manager.remove(id))
          } else {
            const s: Subscription.Subscription = {
              id: `s${next++}`,
              table: { name: pick(names) },
              ...(random() < 0.4 ? { columns: pick([["id", "a"], ["id", "b"], ["id"]]) } : {}),
              ...(random() < 0.5 ? { where: pick(["id > 10", "id % 2 = 0", "id < 1000"]) } : {})
            }
            model.set(s.id, s)
            requests.push(manager.add(s))
          }
        }
        yield* Effect.all(requests, { concurrency: "unbounded" })
        // expected: the desired set of the model, with each filter as PostgreSQL itself prints it on that table
        const desired = Desired.desired([...model.values()].map((s) => Result.getOrThrow(Subscription.check(s))))
        const expected: Array<string> = []
        for (const t of desired) {
          const printed = t.where === undefined ? undefined : (yield* Validation.tryClause(sql, { ...t, oid: (yield* PublicationCatalog.table(sql, t.schema, t.name))!.oid }, { lockTimeoutMs: 2000, publish: "insert, update, delete, truncate", replicaIdentityFull: false, serverVersion: 180000 })).printedWhere
          expected.push(`${t.schema}.${t.name}${t.columns === undefined ? "" : ` [${[...t.columns].sort().join(",")}]`}${printed === undefined ? "" : ` WHERE ${printed}`}`)
        }
        assert.deepStrictEqual(yield* publicationTables(pg), expected.sort(), `round ${round}`)
        const saved = yield* pg.query<{ id: string }>("SELECT id FROM slotkeeper.subscriptions ORDER BY id")
        assert.deepStrictEqual(saved.map((r) => r.id), [...model.keys()].sort())
      }
    }))

  it.live("a stale owner's reconcile is rejected with OwnershipLost and the publication is unchanged", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* tables(pg, ["t0", "t1"])
      const a = yield* startManager("a", pg.url)
      yield* a.manager.add({ id: "x", table: { name: "t0" } })
      const before = yield* publicationTables(pg)
      const intervals: Array<Interval> = []
      yield* startInstance("b", pg.url, intervals, fastTiming.advisory)
      // a's lock session ends (an administrator, a network failure): b takes over at once
      yield* pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'slotkeeper:orders:a:lock'")
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      // a reconcile with a's (stale) ownership: the guard refuses it, inside PostgreSQL
      const stale = yield* PgPublication.make(a.own, a.ownership.sql, publicationOptions)
      const t1 = { id: "y", schema: "public", name: "t1", columns: undefined, where: undefined, printedWhere: undefined, replicaIdentityFull: false }
      const error = yield* Effect.flip(stale.apply({ all: [t1], added: [t1], removed: ["x"] }))
      assert.strictEqual(error._tag, "OwnershipLost")
      assert.deepStrictEqual(yield* publicationTables(pg), before)
      assert.deepStrictEqual(yield* pg.query("SELECT id FROM slotkeeper.subscriptions"), [{ id: "x" }])
    }))

  it.live("drift: a table added and the publication dropped behind slotkeeper's back are detected and repaired", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* tables(pg, ["t0", "t1"])
      const { manager } = yield* startManager("a", pg.url, { manager: { driftInterval: "200 millis" } })
      const seen: Array<string> = []
      yield* Effect.forkScoped(Stream.runForEach(SubscriptionRef.changes(manager.status), (s) => Effect.sync(() => seen.push(...s.drift.map((d) => d.code)))))
      yield* manager.add({ id: "x", table: { name: "t0" }, where: "id > 5" })
      const good = yield* publicationTables(pg)
      assert.deepStrictEqual(good, ["public.t0 WHERE (id > 5)"])
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders ADD TABLE t1")
      yield* eventually(Effect.map(publicationTables(pg), (t) => (t.length === 1 && seen.includes("TablesDiffer") ? t : undefined)), 10_000, "t1 removed again")
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders SET TABLE t0 WHERE (id > 6)")
      yield* eventually(Effect.map(publicationTables(pg), (t) => (t[0] === good[0] ? t : undefined)), 10_000, "the filter repaired")
      yield* pg.query("DROP PUBLICATION slotkeeper_orders")
      yield* eventually(Effect.map(publicationTables(pg), (t) => (t.length === 1 && seen.includes("PublicationDropped") ? t : undefined)), 10_000, "the publication re-created")
      assert.deepStrictEqual(yield* publicationTables(pg), good)
      assert.match((yield* SubscriptionRef.get(manager.status)).resyncRequired ?? "", /dropped behind slotkeeper's back/)
    }))

  it.live("on start, the recovered subscriptions are reconciled as a whole: tables nobody needs any more are removed", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* tables(pg, ["t0", "t1", "t2"])
      const first = yield* startManager("a", pg.url)
      yield* first.manager.add({ id: "x", table: { name: "t0" } })
      yield* first.manager.add({ id: "y", table: { name: "t1" }, columns: ["id", "a"] })
      yield* Fiber.interrupt(first.fiber)
      // while nobody owns the stream: a subscription disappears and someone adds a table
      yield* pg.query("DELETE FROM slotkeeper.subscriptions WHERE id = 'x'")
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders ADD TABLE t2")
      const second = yield* startManager("b", pg.url)
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.t1 [a,id]"])
      assert.deepStrictEqual((yield* second.manager.subscriptions).map((s) => s.id), ["y"])
    }))

  it.live("a table added while rows are being written: every row written after the add returned is delivered", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* tables(pg, ["t0", "busy"])
      const received = new Set<number>()
      const { manager } = yield* startManager("a", pg.url, {
        alongside: (ownership) =>
          Delivery.run({ ...deliveryOptions, url: Redacted.make(pg.url), instanceId: "a", sql: ownership.sql }, (connection) =>
            Stream.runForEach(connection.events, (event) =>
              event._tag === "Change" && event.op === "insert" && event.table === "busy"
                ? Effect.sync(() => void received.add(Number(event.new!.id)))
                : event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void))
      })
      yield* manager.add({ id: "first", table: { name: "t0" } })
      // a writer that never stops while the table is added: one row per transaction, with when each began
      const begun: Array<{ id: number; at: number }> = []
      const writer = yield* Effect.forkScoped(Effect.gen(function*() {
        for (let id = 1; ; id++) {
          begun.push({ id, at: performance.now() })
          yield* pg.query(`INSERT INTO busy VALUES (${id}, ${id}, 'x')`)
        }
      }))
      yield* eventually(Effect.sync(() => (begun.length > 50 ? true : undefined)), 10_000, "the writer under way")
      yield* manager.add({ id: "busy", table: { name: "busy" } })
      const returned = performance.now()
      yield* eventually(Effect.sync(() => (begun.filter((b) => b.at > returned).length > 200 ? true : undefined)), 20_000, "200 rows after the add")
      yield* Fiber.interrupt(writer)
      const after = begun.filter((b) => b.at > returned).map((b) => b.id).slice(0, -1) // the last may have been interrupted
      yield* eventually(Effect.sync(() => (after.every((id) => received.has(id)) ? true : undefined)), 20_000,
        "every row written after the add returned")
      assert.isAtLeast(after.length, 200) // 201 or more began after the add; the last one may not have finished
    }))

  it.live("a table locked by application DDL: the reconcile waits at most lock_timeout per attempt, retries, then fails typed; nothing changed, nothing hangs", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* tables(pg, ["t0", "t1"])
      const { manager } = yield* startManager("a", pg.url, { publication: { lockTimeoutMs: 200, lockRetries: 2 } })
      yield* manager.add({ id: "x", table: { name: "t0" } })
      // an application transaction holds t1 (a long migration)
      const app = new pg_.Client({ connectionString: pg.url })
      yield* Effect.promise(() => app.connect())
      yield* Effect.addFinalizer(() => Effect.promise(() => app.end()))
      yield* Effect.promise(() => app.query("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE"))
      const started = performance.now()
      const error = yield* Effect.flip(manager.add({ id: "y", table: { name: "t1" } }))
      const took = performance.now() - started
      assert.include(error, { _tag: "PublicationError", reason: "LockTimeout" })
      assert.match(error.message, /gave up after 3 attempts/)
      assert.isBelow(took, 10_000) // 3 × 200 ms plus backoff; bounded, never hanging
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.t0"])
      assert.deepStrictEqual(yield* pg.query("SELECT id FROM slotkeeper.subscriptions"), [{ id: "x" }])
      yield* Effect.promise(() => app.query("COMMIT"))
      yield* manager.add({ id: "y", table: { name: "t1" } })
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.t0", "public.t1"])
    }))
})
