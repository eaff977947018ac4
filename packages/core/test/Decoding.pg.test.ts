import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import type { ReplicationEvent } from "../src/replication/ReplicationStream.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

/** Consumes stream "orders" on `url`, acknowledging every commit; all events in `events`. */
const consume = (url: string) =>
  Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(url), ...fastTiming.advisory })
    const events: Array<ReplicationEvent> = []
    yield* Effect.forkScoped(ownership.supervisor.run(Delivery.run({ ...deliveryOptions, url: Redacted.make(url), instanceId: "a", sql: ownership.sql }, (connection) =>
      Stream.runForEach(connection.events, (event) =>
        Effect.andThen(Effect.sync(() => void events.push(event)), event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void)))))
    yield* eventually(Effect.map(ownership.sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_replication_slots WHERE temporary`, (r) => (r[0]!.n > 0 ? true : undefined)), 20_000, "streaming")
    return events
  })

const changes = (events: ReadonlyArray<ReplicationEvent>) => events.filter((e) => e._tag === "Change")
const committed = (events: ReadonlyArray<ReplicationEvent>, n: number) =>
  eventually(Effect.sync(() => (events.filter((e) => e._tag === "Commit").length >= n ? events : undefined)), 20_000, `${n} commits`)

describe.each([15, 18])("Decoding (real PostgreSQL %i)", (major) => {
  it.live("every type family maps as documented", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      yield* pg.query("CREATE TYPE mood AS ENUM ('ok', 'sad')")
      yield* pg.query(`CREATE TABLE items (
        id int PRIMARY KEY, b bool, i2 int2, i8 int8, n numeric, f4 float4, f8 float8, fnan float8, finf float8,
        t text, vc varchar(10), u uuid, j json, jb jsonb, ts timestamp, tstz timestamptz, d date, tm time, iv interval,
        by bytea, ia int4[], ta text[], ja jsonb[], na numeric[][], m mood, nul text, inet inet)`)
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const events = yield* consume(pg.url)
      yield* pg.query(`INSERT INTO items VALUES (
        1, true, -32768, 9223372036854775807, 12345678901234567890.123456789, 1.5, 0.1, 'NaN', '-Infinity',
        'multi
line ''quoted'' \\ text', 'short', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.5, null]}', '{"b": {"c": true}}',
        '2026-11-21 07:05:00.123456', '2026-11-21 07:05:00.5+05:30', '2026-11-21', '07:05:00', '1 day 02:03:04',
        '\\x00ff10', '{1,NULL,3}', '{"a,b","q\\"uote",NULL,"NULL"}', ARRAY['{"x":1}'::jsonb], '{{1.5,2},{3,4}}', 'sad', NULL, '10.0.0.1/8')`)
      yield* committed(events, 1)
      const [change] = changes(events)
      assert.deepStrictEqual(change?._tag === "Change" ? change.new : undefined, {
        id: 1, b: true, i2: -32768, i8: "9223372036854775807", n: "12345678901234567890.123456789", f4: 1.5, f8: 0.1, fnan: Number.NaN,
        finf: Number.NEGATIVE_INFINITY, t: "multi\nline 'quoted' \\ text", vc: "short", u: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        j: "{\"a\": [1, 2.5, null]}", jb: "{\"b\": {\"c\": true}}", ts: "2026-11-21T07:05:00.123456", tstz: "2026-11-21T01:35:00.5+00:00", d: "2026-11-21",
        tm: "07:05:00", iv: "1 day 02:03:04", by: "\\x00ff10", ia: [1, null, 3], ta: ["a,b", "q\"uote", null, "NULL"], ja: ["{\"x\": 1}"],
        na: [["1.5", "2"], ["3", "4"]], m: "sad", nul: null, inet: "10.0.0.1/8"
      })
    }))

  it.live("updates and deletes carry what the replica identity sends; unchanged TOAST is marked, not faked; truncate, messages, relation changes", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      yield* pg.query("CREATE TABLE keyed (id int PRIMARY KEY, v text, big text)")
      yield* pg.query("CREATE TABLE full_rows (id int, v text)")
      yield* pg.query("ALTER TABLE full_rows REPLICA IDENTITY FULL")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE keyed, full_rows")
      const events = yield* consume(pg.url)
      // 128,000 hardly compressible characters: stored out of line (TOASTed)
      yield* pg.query("INSERT INTO keyed VALUES (1, 'a', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g)), (2, 'b', 'small')")
      yield* pg.query("UPDATE keyed SET v = 'a2' WHERE id = 1") // big unchanged: not sent
      yield* pg.query("UPDATE keyed SET id = 20 WHERE id = 2") // key changed: the old key is sent
      yield* pg.query("DELETE FROM keyed WHERE id = 20")
      yield* pg.query("INSERT INTO full_rows VALUES (1, 'x')")
      yield* pg.query("UPDATE full_rows SET v = 'y'")
      yield* pg.query("DELETE FROM full_rows")
      yield* pg.query("WITH m AS (SELECT pg_logical_emit_message(true, 'app', 'in a transaction') AS lsn) INSERT INTO full_rows SELECT 2, 'z' FROM m")
      yield* pg.query("SELECT pg_logical_emit_message(false, 'app', 'on its own')::text")
      yield* pg.query("ALTER TABLE keyed ADD COLUMN extra int DEFAULT 7")
      yield* pg.query("INSERT INTO keyed (id, v, big) VALUES (3, 'c', 'x')")
      yield* pg.query("TRUNCATE keyed")
      yield* committed(events, 10)
      const seen = events.filter((e) => e._tag !== "Begin" && e._tag !== "Commit").map((e) =>
        e._tag === "Change"
          ? { op: e.op, table: e.table, new: e.new && ({ ...e.new, ...(typeof e.new.big === "string" && e.new.big.length > 100 ? { big: `${e.new.big.length} chars` } : {}) } as Record<string, unknown>), old: e.old, oldIsKey: e.oldIsKey, unchanged: e.unchanged, seq: e.seq }
          : e._tag === "Truncate" ? { truncate: e.tables.map((t) => t.table), seq: e.seq }
          : e._tag === "Message" ? { message: Buffer.from(e.content).toString(), transactional: e.transactional, inTransaction: e.transaction?.seq }
          : e._tag === "Schema" ? { shapeOf: e.table, columns: e.columns.map((c) => `${c.name} ${c.type}${c.key ? " key" : ""}`), seq: e.seq } : e)
      // a table's shape before its first change on the connection, and again before the first change after it changed
      // (types as PostgreSQL's format_type writes them; REPLICA IDENTITY FULL: every column is the key)
      assert.deepStrictEqual(seen, [
        { shapeOf: "keyed", columns: ["id integer key", "v text", "big text"], seq: 1 },
        { op: "insert", table: "keyed", new: { id: 1, v: "a", big: "128000 chars" }, old: undefined, oldIsKey: false, unchanged: [], seq: 1 },
        { op: "insert", table: "keyed", new: { id: 2, v: "b", big: "small" }, old: undefined, oldIsKey: false, unchanged: [], seq: 2 },
        { op: "update", table: "keyed", new: { id: 1, v: "a2" }, old: undefined, oldIsKey: false, unchanged: ["big"], seq: 1 },
        { op: "update", table: "keyed", new: { id: 20, v: "b", big: "small" }, old: { id: 2 }, oldIsKey: true, unchanged: [], seq: 1 },
        { op: "delete", table: "keyed", new: undefined, old: { id: 20 }, oldIsKey: true, unchanged: [], seq: 1 },
        { shapeOf: "full_rows", columns: ["id integer key", "v text key"], seq: 1 },
        { op: "insert", table: "full_rows", new: { id: 1, v: "x" }, old: undefined, oldIsKey: false, unchanged: [], seq: 1 },
        { op: "update", table: "full_rows", new: { id: 1, v: "y" }, old: { id: 1, v: "x" }, oldIsKey: false, unchanged: [], seq: 1 },
        { op: "delete", table: "full_rows", new: undefined, old: { id: 1, v: "y" }, oldIsKey: false, unchanged: [], seq: 1 },
        { message: "in a transaction", transactional: true, inTransaction: 1 },
        { op: "insert", table: "full_rows", new: { id: 2, v: "z" }, old: undefined, oldIsKey: false, unchanged: [], seq: 2 },
        { message: "on its own", transactional: false, inTransaction: undefined },
        { shapeOf: "keyed", columns: ["id integer key", "v text", "big text", "extra integer"], seq: 1 },
        { op: "insert", table: "keyed", new: { id: 3, v: "c", big: "x", extra: 7 }, old: undefined, oldIsKey: false, unchanged: [], seq: 1 },
        { truncate: ["keyed"], seq: 1 }
      ])
    }))

  it.live("a transaction too big for logical_decoding_work_mem is streamed while in progress: delivered whole at its commit, in commit order, each change in the shape it was sent; aborted parts never", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major, settings: { logical_decoding_work_mem: "64kB" } })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      const events = yield* consume(pg.url)
      // big: 5,000 rows with a rolled-back subtransaction in the middle, committed after a small one that began later
      const pgModule = yield* Effect.promise(() => import("pg"))
      const big = new pgModule.default.Client({ connectionString: pg.url })
      yield* Effect.promise(() => big.connect())
      yield* Effect.addFinalizer(() => Effect.promise(() => big.end()))
      yield* Effect.promise(() => big.query("BEGIN"))
      yield* Effect.promise(() => big.query("INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 2500) g"))
      yield* Effect.promise(() => big.query("SAVEPOINT s; INSERT INTO items SELECT g, 'aborted' FROM generate_series(100001, 102000) g; ROLLBACK TO SAVEPOINT s"))
      yield* Effect.promise(() => big.query("INSERT INTO items SELECT g, repeat('y', 100) FROM generate_series(2501, 5000) g"))
      yield* pg.query("INSERT INTO items VALUES (900001, 'small, committed first')")
      // a streamed transaction that aborts whole
      yield* pg.query("BEGIN; INSERT INTO items SELECT g, repeat('z', 100) FROM generate_series(200001, 203000) g; ROLLBACK").pipe(Effect.ignore)
      // the table changes shape mid-transaction (which locks it until the commit: other writers went first): the
      // changes spooled before keep the columns they were sent with (the stream is paused for the new Relation's type
      // lookup meanwhile: what the socket had delivered waits, copied)
      yield* Effect.promise(() => big.query("ALTER TABLE items ADD COLUMN note text"))
      yield* Effect.promise(() => big.query("INSERT INTO items SELECT g, repeat('w', 100), 'late ' || g FROM generate_series(5001, 6000) g"))
      yield* Effect.promise(() => big.query("UPDATE items SET body = 'updated', note = 'u' WHERE id = 1; DELETE FROM items WHERE id = 2"))
      // ... and again: a column dropped, a column retyped (a type modifier of its own)
      yield* Effect.promise(() => big.query("ALTER TABLE items DROP COLUMN note; INSERT INTO items VALUES (7001, 'after the drop')"))
      yield* Effect.promise(() => big.query("ALTER TABLE items ALTER COLUMN body TYPE varchar(200); INSERT INTO items VALUES (7002, 'after the retype')"))
      yield* Effect.promise(() => big.query("COMMIT"))
      yield* committed(events, 2)
      const commits = events.filter((e) => e._tag === "Commit")
      assert.deepStrictEqual(commits.map((c) => c._tag === "Commit" ? c.changes : 0), [1, 6004])
      const all = changes(events).flatMap((e) => (e._tag === "Change" ? [e] : []))
      const ids = all.map((e) => Number((e.new ?? e.old)!.id))
      assert.deepStrictEqual(ids, [900001, ...Array.from({ length: 6000 }, (_, i) => i + 1), 1, 2, 7001, 7002])
      assert.deepStrictEqual(all.slice(1).map((e) => e.seq), Array.from({ length: 6004 }, (_, i) => i + 1))
      // the table's shape: before its first change, then before the first change after each change of shape — inside
      // the streamed transaction, where PostgreSQL sent the new Relation messages — with format_type's names
      const shapes = events.flatMap((e) => (e._tag === "Schema" ? [{ columns: e.columns.map((c) => `${c.name} ${c.type}${c.key ? " key" : ""}`), seq: e.seq }] : []))
      assert.deepStrictEqual(shapes, [
        { columns: ["id integer key", "body text"], seq: 1 },
        { columns: ["id integer key", "body text", "note text"], seq: 5001 },
        { columns: ["id integer key", "body text"], seq: 6003 },
        { columns: ["id integer key", "body character varying(200)"], seq: 6004 }
      ])
      const [retyped] = yield* pg.query<{ t: string }>("SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'body'")
      assert.strictEqual(retyped!.t, "character varying(200)") // PostgreSQL's own name for it now
      // each change as the Relation message in force when it was sent described it
      assert.deepStrictEqual(all[2500]!.new, { id: 2500, body: "x".repeat(100) })
      assert.deepStrictEqual(all[2501]!.new, { id: 2501, body: "y".repeat(100) })
      assert.deepStrictEqual(all[5001]!.new, { id: 5001, body: "w".repeat(100), note: "late 5001" })
      assert.deepStrictEqual([all[6001]!.op, all[6001]!.new], ["update", { id: 1, body: "updated", note: "u" }])
      assert.deepStrictEqual([all[6002]!.op, all[6002]!.old, all[6002]!.oldIsKey], ["delete", { id: 2 }, true])
      // it really was streamed: the server spilled nothing, it sent the changes in progress
      const [stats] = yield* pg.query<{ streamed: number }>("SELECT coalesce(sum(stream_txns), 0)::int AS streamed FROM pg_stat_replication_slots")
      assert.isAtLeast(stats!.streamed, 1)
    }))
})
