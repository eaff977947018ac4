import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import type * as Subscription from "../src/publication/Subscription.ts"
import { publicationTables, startManager } from "./publication-helpers.ts"

type Server = Effect.Success<ReturnType<typeof PgCluster.make>>

/** Everything a refused subscription must leave as it was. */
const snapshot = (pg: Server) =>
  Effect.all({
    publication: publicationTables(pg),
    subscriptions: pg.query("SELECT id, schema_name, table_name, columns, filter FROM slotkeeper.subscriptions ORDER BY id"),
    tables: pg.query("SELECT c.relname, c.relreplident::text, pg_get_userbyid(c.relowner) AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"),
    publications: pg.query("SELECT pubname, pg_get_userbyid(pubowner) AS owner, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication ORDER BY 1")
  })

describe("Publication: bad input is a typed error and changes nothing (real PostgreSQL 18, and 14 for what needs 15)", () => {
  it.live("each refused subscription says what to change, and the database is as it was", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      // slotkeeper runs as an ordinary role that owns its tables; another role owns one table
      yield* pg.query("CREATE ROLE app LOGIN REPLICATION")
      yield* pg.query("CREATE ROLE other")
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO app")
      yield* pg.query("GRANT ALL ON SCHEMA public TO app, other")
      for (const statement of [
        "CREATE TABLE items (id int PRIMARY KEY, a int, b text)",
        "CREATE TABLE nopk (a int, b text)",
        "CREATE TABLE victim (id int PRIMARY KEY)",
        "ALTER TABLE items OWNER TO app", "ALTER TABLE nopk OWNER TO app", "ALTER TABLE victim OWNER TO app",
        "CREATE TABLE theirs (id int PRIMARY KEY)", "ALTER TABLE theirs OWNER TO other"
      ]) yield* pg.query(statement)
      const { manager } = yield* startManager("a", pg.urlWith({ user: "app" }))
      yield* manager.add({ id: "ok", table: { name: "items" } })
      const before = yield* snapshot(pg)
      assert.deepStrictEqual(before.publication, ["public.items"])

      const cases: Array<[Subscription.Subscription, string, RegExp]> = [
        [{ id: "1", table: { name: "missing" } }, "TableMissing", /no such table/],
        [{ id: "2", table: { name: "victim\"; DROP TABLE victim; --" } }, "TableMissing", /no such table/],
        [{ id: "3", table: { schema: "public\"", name: "items" } }, "TableMissing", /no such table/],
        [{ id: "4", table: { name: "items" }, where: "id > 0) , victim WHERE (true" }, "Filter", /closes a parenthesis/],
        [{ id: "5", table: { name: "items" }, where: "true; DROP TABLE victim" }, "Filter", /';'/],
        [{ id: "6", table: { name: "items" }, where: "nope > 1" }, "Filter", /PostgreSQL refuses it: .*nope/],
        [{ id: "7", table: { name: "items" }, where: "random() > 0.5" }, "Filter", /PostgreSQL refuses it/],
        [{ id: "8", table: { name: "items" }, where: "(SELECT count(*) FROM victim) > 0" }, "Filter", /PostgreSQL refuses it/],
        [{ id: "9", table: { name: "items" }, columns: ["id", "nope"] }, "ColumnMissing", /no column "nope"/],
        [{ id: "10", table: { name: "items" }, where: "a > 1" }, "ReplicaIdentity", /uses a, which the replica identity \(id\) does not cover/],
        [{ id: "11", table: { name: "items" }, columns: ["a", "b"] }, "ReplicaIdentity", /leaves out the replica identity column\(s\) id/],
        [{ id: "12", table: { name: "nopk" } }, "ReplicaIdentity", /no replica identity \(no primary key\).*refuses UPDATE and DELETE/],
        [{ id: "13", table: { name: "theirs" } }, "Privilege", /owned by other; adding a table to a publication requires owning it/],
        [{ id: "ok", table: { name: "nopk" } }, "Conflict", /exists with another table/]
      ]
      for (const [subscription, reason, message] of cases) {
        const exit = yield* Effect.exit(manager.add(subscription))
        assert.isTrue(Exit.isFailure(exit), `subscription ${subscription.id} was accepted`)
        const error = Exit.isFailure(exit) ? (exit.cause.reasons[0] as { error?: { reason?: string; message?: string } } | undefined)?.error : undefined
        assert.strictEqual(error?.reason, reason, `subscription ${subscription.id}: ${error?.message}`)
        assert.match(error?.message ?? "", message)
        assert.deepStrictEqual(yield* snapshot(pg), before, `subscription ${subscription.id} changed the database`)
      }
      // REPLICA IDENTITY FULL only as an explicit opt-in
      yield* manager.add({ id: "full", table: { name: "nopk" }, where: "a > 1", replicaIdentityFull: true })
      assert.deepStrictEqual(yield* pg.query("SELECT relreplident::text AS r FROM pg_class WHERE relname = 'nopk'"), [{ r: "f" }])
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.items", "public.nopk WHERE (a > 1)"])
    }))

  it.live("a publication owned by another role is never altered", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE ROLE app LOGIN REPLICATION")
      yield* pg.query("CREATE ROLE other")
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO app")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders")
      yield* pg.query("ALTER PUBLICATION slotkeeper_orders OWNER TO other")
      const exit = yield* Effect.exit(startManager("a", pg.urlWith({ user: "app" })))
      const error = Exit.isFailure(exit) ? (exit.cause.reasons[0] as { error?: { reason?: string; message?: string } } | undefined)?.error : undefined
      assert.strictEqual(error?.reason, "OwnedByOther")
      assert.match(error?.message ?? "", /owned by other, not by app: only its owner may change it/)
      assert.deepStrictEqual(yield* pg.query("SELECT pg_get_userbyid(pubowner) AS owner FROM pg_publication"), [{ owner: "other" }])
    }))

  it.live("PostgreSQL 14: a row filter or a column list is refused as too old, a plain table is fine", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 14 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, a int)")
      const { manager } = yield* startManager("a", pg.url)
      for (const s of [{ id: "f", table: { name: "items" }, where: "id > 1" }, { id: "c", table: { name: "items" }, columns: ["id"] }]) {
        const error = yield* Effect.flip(manager.add(s))
        assert.include(error, { _tag: "SubscriptionInvalid", reason: "VersionTooOld" })
        assert.match(error.message, /need PostgreSQL 15\+, this server is 14/)
      }
      yield* manager.add({ id: "plain", table: { name: "items" } })
      assert.deepStrictEqual(yield* pg.query("SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = 'slotkeeper_orders'"), [{ t: "public.items" }])
    }))
})
