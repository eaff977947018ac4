/**
 * Backfills inside the stream, against real PostgreSQL: the oracle — a consumer that applies `read`, `insert` and
 * `update` as "put" and `delete` as "remove" ends with exactly the table, while the table is written during the
 * backfill (inserts, updates, deletes, key changes, rows of the chunk being read); and a new owner resumes a backfill
 * from its last saved chunk instead of starting over.
 */
import { PgCluster, type PgServer } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Redacted, Scope, Stream } from "effect"
import NodePg from "pg"
import * as BackfillProgress from "../src/backfill/BackfillProgress.ts"
import { Ownership } from "../src/ownership/Ownership.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import type { ChangeEvent } from "../src/replication/ReplicationStream.ts"
import * as Values from "../src/replication/Values.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

/** The consumer's copy of the table, by key: what applying the delivered changes in order gives. */
class Replica {
  readonly rows = new Map<number, Values.Row>()
  reads = 0
  /** `read` changes delivered through each instance. */
  readonly readsBy = new Map<string, number>()
  /** Deleted keys (the tests never insert a key again). */
  readonly deleted = new Set<number>()
  /**
   * `read` changes that came after a newer change of their row: a deleted row read, or a row read with a lower `n`
   * than a change delivered before (every update in these tests increments `n`).
   */
  readonly staleReads: Array<string> = []
  apply(e: ChangeEvent, by: string) {
    if (e.op === "delete") {
      this.deleted.add(Number(e.old!.id))
      return void this.rows.delete(Number(e.old!.id))
    }
    const id = Number(e.new!.id)
    if (e.op === "read") {
      const had = this.rows.get(id)
      if (this.deleted.has(id)) this.staleReads.push(`${id}: read after its delete`)
      else if (had !== undefined && typeof had.n === "number" && typeof e.new!.n === "number" && e.new!.n < had.n) {
        this.staleReads.push(`${id}: read with n = ${e.new!.n} after a change to n = ${had.n}`)
      }
    }
    if (e.op === "update" && e.old !== undefined && Number(e.old.id) !== id) {
      this.deleted.add(Number(e.old.id))
      this.rows.delete(Number(e.old.id))
    }
    // a TOASTed value an update did not change is not sent: the consumer keeps the one it has
    const kept = this.rows.get(id) ?? {}
    const row: Values.Row = { ...e.new! }
    for (const c of e.unchanged) row[c] = kept[c]!
    this.rows.set(id, row)
    if (e.op === "read") {
      this.reads++
      this.readsBy.set(by, (this.readsBy.get(by) ?? 0) + 1)
    }
  }
}

/** An instance streaming "orders" with backfills on, into `replica`; acknowledging every commit. */
const streamInto = (
  pg: PgServer.PgServer,
  name: string,
  replica: Replica,
  chunkSize: number,
  more: { readonly initial?: "publication"; readonly replicas?: ReadonlyMap<string, Replica>; readonly acknowledging?: () => boolean } = {}
) =>
  Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: Redacted.make(pg.url), ...fastTiming.advisory })
    const held = yield* Deferred.make<Ownership["Service"]>()
    const owned = Effect.gen(function*() {
      yield* Deferred.succeed(held, yield* Ownership)
      return yield* Delivery.run({
        ...deliveryOptions,
        url: Redacted.make(pg.url),
        instanceId: name,
        sql: ownership.sql,
        backfill: { chunkSize, pollInterval: "100 millis", ...(more.initial === undefined ? {} : { initial: more.initial }) }
      }, (connection) =>
        Stream.runForEachArray(connection.events, (events) =>
          Effect.gen(function*() {
            for (const e of events) if (e._tag === "Change") (more.replicas?.get(e.table) ?? replica).apply(e, name)
            const last = [...events].reverse().find((e) => e._tag === "Commit")
            if (last?._tag === "Commit" && (more.acknowledging?.() ?? true)) yield* connection.acknowledge(last.endLsn)
          })))
    })
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    return { ownership, fiber, held }
  })

const tableRows = (pg: PgServer.PgServer, table = "items") =>
  Effect.map(pg.query<{ id: number; body: string; n: number | null }>(`SELECT id, body, n FROM ${table} ORDER BY id`), (rows) => new Map(rows.map((r) => [r.id, { id: r.id, body: r.body, n: r.n }])))

const backfillOf = (pg: PgServer.PgServer) =>
  Effect.map(pg.query<{ state: string; rows: string; chunks: string; last_key: unknown }>("SELECT state, rows::text, chunks::text, last_key FROM slotkeeper.backfills"), (r) => r[0])

/** Delivered up to now: a sentinel row committed last has arrived. */
const caughtUp = (pg: PgServer.PgServer, replica: Replica, sentinel: number) =>
  Effect.gen(function*() {
    yield* pg.query(`INSERT INTO items VALUES (${sentinel}, 'sentinel', 0)`)
    yield* eventually(Effect.sync(() => (replica.rows.has(sentinel) ? true : undefined)), 30_000, `sentinel ${sentinel} delivered`)
    yield* pg.query(`DELETE FROM items WHERE id = ${sentinel}`)
    yield* eventually(Effect.sync(() => (replica.rows.has(sentinel) ? undefined : true)), 30_000, `sentinel ${sentinel} deleted`)
  })

describe("Backfill (real PostgreSQL 18)", () => {
  it.live("200,000 existing rows while the table is written: the consumer ends with exactly the table", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("INSERT INTO items SELECT g, 'existing ' || g, g FROM generate_series(1, 200000) g")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const replica = new Replica()
      const a = yield* streamInto(pg, "a", replica, 5000)
      yield* Deferred.await(a.held)
      yield* eventually(Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE temporary"), (r) => (r.length > 0 ? true : undefined)), 30_000, "streaming")
      // writers during the backfill: updates anywhere, deletes, inserts, key changes — and transactions that update
      // 200 rows across the table and stay open a few milliseconds, so that a chunk's snapshot often finds one in
      // progress that touches the chunk's rows and commits before the chunk's watermark
      let writes = 0
      const scattered = Effect.forever(Effect.gen(function*() {
        const at = 1 + Math.floor(Math.random() * 200000)
        yield* pg.query(`UPDATE items SET body = 'updated ' || n, n = n + 1 WHERE id BETWEEN ${at} AND ${at + 20}`)
        yield* pg.query(`DELETE FROM items WHERE id = ${1 + Math.floor(Math.random() * 200000)}`)
        yield* pg.query(`INSERT INTO items VALUES (${300000 + writes}, 'new', 0)`)
        yield* pg.query(`UPDATE items SET id = id + 1000000 WHERE id = ${1 + Math.floor(Math.random() * 200000)}`)
        writes++
      }).pipe(Effect.ignore))
      // each on a session of its own: BEGIN, UPDATE, a pause, COMMIT (one simple query, several statements)
      const inFlight = Effect.gen(function*() {
        const client = new NodePg.Client({ connectionString: pg.url })
        yield* Effect.acquireRelease(Effect.promise(() => client.connect()), () => Effect.promise(() => client.end().catch(() => undefined)))
        return yield* Effect.forever(Effect.gen(function*() {
          const ids = Array.from({ length: 200 }, () => 1 + Math.floor(Math.random() * 200000))
          yield* Effect.promise(() => client.query(`BEGIN; UPDATE items SET body = 'in flight ' || n, n = n + 1 WHERE id IN (${ids.join(", ")}); SELECT pg_sleep(0.01); COMMIT`))
          writes++
        }))
      })
      const writers = yield* Effect.forkScoped(Effect.all([scattered, inFlight, inFlight, inFlight], { concurrency: "unbounded" }))
      yield* BackfillProgress.request(a.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      yield* eventually(Effect.map(backfillOf(pg), (b) => (b?.state === "done" ? true : undefined)), 120_000, "the backfill done")
      yield* Fiber.interrupt(writers)
      yield* caughtUp(pg, replica, 999_999_999)
      const table = yield* tableRows(pg)
      assert.isAbove(writes, 5, "the table was written during the backfill")
      assert.deepStrictEqual(replica.staleReads, [], "no read after a newer change of its row")
      assert.strictEqual(replica.rows.size, table.size)
      assert.deepStrictEqual(replica.rows, table)
      // every row read at least once (those of the original range that still exist were read or changed first)
      const b = yield* backfillOf(pg)
      assert.isAtLeast(Number(b!.chunks), 40)
      assert.isAbove(replica.reads, 150000)
    }), 240_000)

  it.live("a graceful handover mid-backfill: the next owner resumes after the last saved chunk, and the consumer still ends with the table", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("INSERT INTO items SELECT g, 'existing ' || g, g FROM generate_series(1, 60000) g")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const replica = new Replica()
      const scopeA = yield* Scope.make()
      const a = yield* Scope.provide(scopeA)(streamInto(pg, "a", replica, 1000))
      yield* Deferred.await(a.held)
      yield* BackfillProgress.request(a.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      const saved = yield* eventually(Effect.map(backfillOf(pg), (b) => (b !== undefined && Number(b.chunks) >= 10 ? b : undefined)), 60_000, "10 chunks saved")
      assert.strictEqual(saved.state, "running")
      yield* Scope.close(scopeA, Exit.void)
      const [atHandover] = yield* pg.query<{ chunks: number; k: string }>("SELECT chunks::int AS chunks, last_key->>0 AS k FROM slotkeeper.backfills")
      yield* pg.query("UPDATE items SET body = 'after the handover' WHERE id % 97 = 0")
      yield* streamInto(pg, "b", replica, 1000)
      yield* eventually(Effect.map(backfillOf(pg), (b) => (b?.state === "done" ? true : undefined)), 60_000, "the backfill done")
      yield* caughtUp(pg, replica, 999_999_999)
      assert.deepStrictEqual(replica.staleReads, [])
      assert.deepStrictEqual(replica.rows, yield* tableRows(pg))
      // resumed, not restarted: b read exactly what follows the key a saved last (chunks a placed after it are read
      // again: at least once), 60 chunks saved in all
      const [end] = yield* pg.query<{ chunks: number }>("SELECT chunks::int AS chunks FROM slotkeeper.backfills")
      assert.strictEqual(end!.chunks, 60)
      assert.isAtLeast(atHandover!.chunks, 10)
      assert.strictEqual(replica.readsBy.get("b"), (60 - atHandover!.chunks) * 1000)
      assert.isAtLeast(replica.readsBy.get("a")!, atHandover!.chunks * 1000)
    }), 120_000)

  it.live("a deposed owner's progress write is refused", () =>
    Effect.gen(function*() {
      // covered with both lock modes in BackfillProgress.pg.test.ts; here through a stream's own instance
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const replica = new Replica()
      const scopeA = yield* Scope.make()
      const a = yield* Scope.provide(scopeA)(streamInto(pg, "a", replica, 1000))
      const ownA = yield* Deferred.await(a.held)
      const requested = yield* BackfillProgress.request(a.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      yield* eventually(Effect.map(backfillOf(pg), (b) => (b?.state === "done" ? true : undefined)), 30_000, "the empty backfill done")
      const again = yield* BackfillProgress.request(a.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      assert.notStrictEqual(again.id, requested.id)
      yield* Fiber.interrupt(a.fiber)
      const b = yield* streamInto(pg, "b", replica, 1000)
      yield* Deferred.await(b.held)
      const refused = yield* Effect.flip(BackfillProgress.writer(ownA, a.ownership.sql, "slotkeeper").advance(again.id, ["999"], 1))
      assert.strictEqual(refused._tag, "OwnershipLost")
      yield* Scope.close(scopeA, Exit.void)
    }), 60_000)

  it.live("initial snapshots of the publication: a table that joins it while the stream runs is backfilled, without a restart", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("CREATE TABLE extra (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("INSERT INTO items SELECT g, 'existing ' || g, g FROM generate_series(1, 3000) g")
      yield* pg.query("INSERT INTO extra SELECT g, 'existing ' || g, g FROM generate_series(1, 20000) g")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const replica = new Replica()
      const extra = new Replica()
      const a = yield* streamInto(pg, "a", replica, 1000, { initial: "publication", replicas: new Map([["extra", extra]]) })
      yield* Deferred.await(a.held)
      const done = (table: string) =>
        eventually(
          // (the table of backfills is made by the first request)
          Effect.map(Effect.orElseSucceed(pg.query<{ state: string }>(`SELECT state FROM slotkeeper.backfills WHERE table_name = '${table}'`), () => []), (r) => (r[0]?.state === "done" ? true : undefined)),
          60_000,
          `the initial backfill of ${table} done`
        )
      yield* done("items")
      // extra joins the publication (as a new subscription would make it) while it is written
      const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const at = 1 + Math.floor(Math.random() * 20000)
        yield* pg.query(`UPDATE extra SET body = 'updated', n = n + 1 WHERE id BETWEEN ${at} AND ${at + 50}`)
        yield* pg.query(`DELETE FROM extra WHERE id = ${1 + Math.floor(Math.random() * 20000)}`)
      })).pipe(Effect.ignore))
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders ADD TABLE extra")
      yield* done("extra")
      yield* Fiber.interrupt(writer)
      yield* pg.query("INSERT INTO extra VALUES (999999999, 'sentinel', 0)")
      yield* eventually(Effect.sync(() => (extra.rows.has(999999999) ? true : undefined)), 30_000, "the sentinel delivered")
      assert.deepStrictEqual(extra.staleReads, [])
      assert.deepStrictEqual(extra.rows, yield* tableRows(pg, "extra"))
      assert.deepStrictEqual(replica.rows, yield* tableRows(pg, "items"))
      // each table asked for once: the next polls found nothing new
      const [count] = yield* pg.query<{ n: number }>("SELECT count(*)::int AS n FROM slotkeeper.backfills")
      assert.strictEqual(count!.n, 2)
    }), 120_000)

  it.live("a sink that does not acknowledge holds the backfill at two chunks; acknowledging lets it finish", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text, n int)")
      yield* pg.query("INSERT INTO items SELECT g, 'existing ' || g, g FROM generate_series(1, 20000) g")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const replica = new Replica()
      let acknowledging = false
      const a = yield* streamInto(pg, "a", replica, 1000, { acknowledging: () => acknowledging })
      yield* Deferred.await(a.held)
      yield* eventually(Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE temporary"), (r) => (r.length > 0 ? true : undefined)), 30_000, "streaming")
      yield* BackfillProgress.request(a.ownership.sql, "slotkeeper", "orders", { schema: "public", table: "items" })
      yield* eventually(Effect.sync(() => (replica.reads >= 2000 ? true : undefined)), 30_000, "two chunks delivered")
      // the stream goes on (two rows committed after, delivered), and no third chunk came meanwhile
      for (const id of [900001, 900002]) {
        yield* pg.query(`INSERT INTO items VALUES (${id}, 'witness', 0)`)
        yield* eventually(Effect.sync(() => (replica.rows.has(id) ? true : undefined)), 30_000, `row ${id} delivered`)
      }
      assert.strictEqual(replica.reads, 2000, "two chunks, no more, while nothing is acknowledged")
      acknowledging = true
      yield* pg.query("INSERT INTO items VALUES (900003, 'first acknowledged', 0)")
      yield* eventually(Effect.map(backfillOf(pg), (b) => (b?.state === "done" ? true : undefined)), 60_000, "the backfill done")
      yield* caughtUp(pg, replica, 999_999_999)
      assert.deepStrictEqual(replica.rows, yield* tableRows(pg))
    }), 120_000)
})
