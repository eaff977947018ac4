/**
 * slotkeeper never makes the application's UPDATE or DELETE fail: every case found in review, on a real server —
 * after slotkeeper starts, is refused or repairs, the application's UPDATE and DELETE on every table still succeed.
 */
import { PgCluster, type PgServer } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, SubscriptionRef } from "effect"
import type * as Subscription from "../src/publication/Subscription.ts"
import { eventually } from "./ownership-helpers.ts"
import type * as PgPublication from "../src/publication/PgPublication.ts"
import { publicationTables, startManager } from "./publication-helpers.ts"

/** The application's writes on `table`: an UPDATE and a DELETE of a row it inserts. Fails with PostgreSQL's error. */
const appWrites = (pg: PgServer.PgServer, table: string, row: string, set: string) =>
  Effect.gen(function*() {
    yield* pg.query(`INSERT INTO ${table} VALUES ${row}`)
    yield* pg.query(`UPDATE ${table} SET ${set}`)
    yield* pg.query(`DELETE FROM ${table}`)
  })

/** The manager's start with `subscriptions` as its configured set: its failure, if any. */
const startWith = (pg: PgServer.PgServer, subscriptions: ReadonlyArray<Subscription.Subscription>, publication: Partial<PgPublication.PgPublicationOptions> = {}) =>
  Effect.exit(startManager("a", pg.url, { manager: { configured: { subscriptions, instanceId: "a", startedAt: "0" } }, publication }))

const failure = (exit: Exit.Exit<unknown, unknown>) => {
  assert.isTrue(Exit.isFailure(exit), "refused")
  return JSON.stringify(Exit.isFailure(exit) ? exit.cause : "")
}

describe("WriteSafety: the application's writes (real PostgreSQL 18)", () => {
  it.live("REPLICA IDENTITY FULL opted in with a column list: refused, nothing changed, UPDATE and DELETE still work", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE t (id int PRIMARY KEY, a int, b int)")
      const exit = yield* startWith(pg, [{ id: "t", table: { name: "t" }, columns: ["id", "a"], replicaIdentityFull: true }])
      assert.match(failure(exit), /column list leaves out the replica identity column\(s\) b \(with REPLICA IDENTITY FULL the identity is every column\)/)
      const [ident] = yield* pg.query<{ r: string }>("SELECT relreplident::text AS r FROM pg_class WHERE relname = 't'")
      assert.strictEqual(ident?.r, "d") // the table's identity was not changed
      assert.deepStrictEqual(yield* publicationTables(pg), [])
      yield* appWrites(pg, "t", "(1, 1, 1)", "a = 2")
    }))

  it.live("a column list on a table that is REPLICA IDENTITY FULL already: refused, UPDATE still works", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE t (id int, a int, b int)")
      yield* pg.query("ALTER TABLE t REPLICA IDENTITY FULL")
      const exit = yield* startWith(pg, [{ id: "t", table: { name: "t" }, columns: ["id", "a"] }])
      assert.match(failure(exit), /column list leaves out the replica identity column\(s\) b/)
      assert.deepStrictEqual(yield* publicationTables(pg), [])
      yield* appWrites(pg, "t", "(1, 1, 1)", "a = 2")
    }))

  it.live("REPLICA IDENTITY FULL opted in on a table with generated columns left unpublished (PostgreSQL 18, generated columns none): refused, UPDATE still works", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE t (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) STORED)")
      const exit = yield* startWith(pg, [{ id: "t", table: { name: "t" }, replicaIdentityFull: true }], { generatedColumns: "none" })
      assert.match(failure(exit), /generated columns/)
      const [ident] = yield* pg.query<{ r: string }>("SELECT relreplident::text AS r FROM pg_class WHERE relname = 't'")
      assert.strictEqual(ident?.r, "d")
      yield* appWrites(pg, "t", "(1, 1)", "a = 2")
    }))

  it.live("REPLICA IDENTITY FULL on a table with stored generated columns that are published (PostgreSQL 18's default here): accepted, UPDATE and DELETE work", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE t (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) STORED)")
      const exit = yield* startWith(pg, [{ id: "t", table: { name: "t" }, replicaIdentityFull: true }])
      assert.isTrue(Exit.isSuccess(exit), JSON.stringify(Exit.isFailure(exit) ? exit.cause : ""))
      const [ident] = yield* pg.query<{ r: string }>("SELECT relreplident::text AS r FROM pg_class WHERE relname = 't'")
      assert.strictEqual(ident?.r, "f")
      yield* appWrites(pg, "t", "(1, 1)", "a = 2")
    }))

  it.live("a row filter on an inheritance parent whose child's identity does not cover it: refused, naming the child; the child's UPDATE works", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE parent (id int PRIMARY KEY, v int)")
      yield* pg.query("CREATE UNIQUE INDEX parent_id_v ON parent (id, v)")
      yield* pg.query("ALTER TABLE parent ALTER COLUMN v SET NOT NULL")
      yield* pg.query("ALTER TABLE parent REPLICA IDENTITY USING INDEX parent_id_v")
      yield* pg.query("CREATE TABLE child (w int) INHERITS (parent)")
      yield* pg.query("ALTER TABLE child ADD PRIMARY KEY (id)")
      const exit = yield* startWith(pg, [{ id: "p", table: { name: "parent" }, where: "v > 1" }])
      assert.match(failure(exit), /inheritance children and partitions too.*UPDATE on public\.child/)
      assert.deepStrictEqual(yield* publicationTables(pg), [])
      yield* appWrites(pg, "child", "(1, 5, 0)", "v = 6")
      yield* appWrites(pg, "parent", "(1, 5)", "v = 6")
    }))

  it.live("an inheritance parent that is safe: published with its child, which drift repair leaves in place", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE parent (id int PRIMARY KEY, v int)")
      yield* pg.query("CREATE TABLE child (w int) INHERITS (parent)")
      yield* pg.query("ALTER TABLE child ADD PRIMARY KEY (id)")
      const { manager } = yield* startManager("a", pg.url, { manager: { driftInterval: "200 millis" } })
      yield* manager.add({ id: "p", table: { name: "parent" } })
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.child", "public.parent"])
      // several drift checks later: nothing to repair, the child stays
      yield* Effect.sleep("1 second")
      assert.deepStrictEqual((yield* SubscriptionRef.get(manager.status)).drift, [])
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.child", "public.parent"])
      yield* appWrites(pg, "child", "(1, 5, 0)", "v = 6")
    }))

  it.live("a partitioned table without a key of its own whose partitions have keys is accepted, as PostgreSQL accepts it", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE m (id int, at date) PARTITION BY RANGE (at)")
      yield* pg.query("CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
      yield* pg.query("ALTER TABLE m_2026 ADD PRIMARY KEY (id)")
      const { manager } = yield* startManager("a", pg.url)
      yield* manager.add({ id: "m", table: { name: "m" } })
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.m"])
      yield* appWrites(pg, "m", "(1, '2026-06-01')", "id = 2")
      // ... and one whose partition has no key is refused, naming the partition
      yield* pg.query("CREATE TABLE n (id int, at date) PARTITION BY RANGE (at)")
      yield* pg.query("CREATE TABLE n_2026 PARTITION OF n FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
      const refused = yield* Effect.flip(manager.add({ id: "n", table: { name: "n" } }))
      assert.match(refused.message, /UPDATE on public\.n_2026/)
      yield* appWrites(pg, "n", "(1, '2026-06-01')", "id = 2")
    }))

  it.live("a refusal names the column the filter uses (PostgreSQL 18, a virtual generated column)", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE g (id int PRIMARY KEY, x int, y int GENERATED ALWAYS AS (x * 2) VIRTUAL)")
      const { manager } = yield* startManager("a", pg.url)
      const refused = yield* Effect.flip(manager.add({ id: "g", table: { name: "g" }, where: "y > 10" }))
      assert.match(refused.message, /the row filter uses y[,]? /)
      yield* appWrites(pg, "g", "(1, 1)", "x = 2")
    }))

  it.live("drift: a schema renamed and its name reused — the original table stays published under its new name, the new one is not published, both accept UPDATE", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE SCHEMA sch1")
      yield* pg.query("CREATE TABLE sch1.t1 (id int PRIMARY KEY, v int)")
      const { manager } = yield* startManager("a", pg.url, { manager: { driftInterval: "200 millis" } })
      yield* manager.add({ id: "t1", table: { schema: "sch1", name: "t1" } })
      yield* pg.query("ALTER SCHEMA sch1 RENAME TO sch2")
      yield* pg.query("CREATE SCHEMA sch1")
      yield* pg.query("CREATE TABLE sch1.t1 (id int, v int)") // no replica identity
      const drift = yield* eventually(Effect.map(SubscriptionRef.get(manager.status), (s) => (s.drift.some((d) => d.code === "TableRenamed") ? s.drift : undefined)), 10_000, "the rename reported")
      assert.match(drift.find((d) => d.code === "TableRenamed")!.message, /sch1\.t1 .* is now sch2\.t1: it stays published/)
      yield* Effect.sleep("1 second") // several drift checks and repairs
      assert.deepStrictEqual(yield* publicationTables(pg), ["sch2.t1"])
      assert.deepStrictEqual((yield* manager.subscriptions).map((s) => `${s.schema}.${s.name}`), ["sch2.t1"])
      assert.deepStrictEqual(yield* pg.query("SELECT schema_name, table_name FROM slotkeeper.subscriptions"), [{ schema_name: "sch2", table_name: "t1" }])
      yield* appWrites(pg, "sch1.t1", "(1, 1)", "v = 2")
      yield* appWrites(pg, "sch2.t1", "(1, 1)", "v = 2")
    }))

  it.live("drift: a table renamed stays published; one dropped is reported as an error, and a table that takes its name is not published", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE a (id int PRIMARY KEY)")
      yield* pg.query("CREATE TABLE b (id int PRIMARY KEY)")
      const { manager } = yield* startManager("a", pg.url, { manager: { driftInterval: "200 millis" } })
      yield* manager.add({ id: "a", table: { name: "a" } })
      yield* manager.add({ id: "b", table: { name: "b" } })
      yield* pg.query("ALTER TABLE a RENAME TO a2")
      yield* pg.query("DROP TABLE b")
      yield* pg.query("CREATE TABLE b (id int)")
      const drift = yield* eventually(Effect.map(SubscriptionRef.get(manager.status), (s) =>
        s.drift.some((d) => d.code === "TableRenamed") && s.drift.some((d) => d.code === "TableDropped") ? s.drift : undefined), 10_000, "rename and drop reported")
      assert.match(drift.find((d) => d.code === "TableDropped")!.message, /public\.b .* was dropped/)
      yield* Effect.sleep("1 second")
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.a2"])
      yield* appWrites(pg, "b", "(1)", "id = 2")
    }))

  it.live("drift repair that would break writes is not made: reported in the status (and logged), the application's UPDATE keeps working", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE t (id int PRIMARY KEY, v int)")
      const { manager } = yield* startManager("a", pg.url, { manager: { driftInterval: "200 millis" } })
      yield* manager.add({ id: "t", table: { name: "t" } })
      // behind slotkeeper's back: the table leaves the publication, then loses its key
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders DROP TABLE t")
      yield* pg.query("ALTER TABLE t DROP CONSTRAINT t_pkey")
      const status = yield* eventually(Effect.map(SubscriptionRef.get(manager.status), (s) => (s.drift.some((d) => d.code === "WritesWouldBreak") ? s : undefined)), 10_000, "the refused repair reported")
      assert.match(status.lastError ?? "", /would then refuse the application's UPDATE on public\.t .*does not have a replica identity/)
      assert.deepStrictEqual(yield* publicationTables(pg), [])
      yield* appWrites(pg, "t", "(1, 1)", "v = 2")
    }))
})
