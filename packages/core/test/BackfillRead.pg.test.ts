/**
 * A backfill's reads against real PostgreSQL: what it refuses before reading anything, chunks that follow the key in
 * PostgreSQL's order (a composite key with a collation), the publication's row filter, and rows — TOASTed values
 * included — exactly as the stream delivers them.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import NodePg from "pg"
import * as ChunkReader from "../src/backfill/ChunkReader.ts"
import * as Connector from "../src/connection/Connector.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import type { ReplicationEvent } from "../src/replication/ReplicationStream.ts"
import { Rows } from "../src/replication/Rows.ts"
import * as TypeCatalog from "../src/replication/TypeCatalog.ts"
import * as Values from "../src/replication/Values.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

describe("ChunkReader (real PostgreSQL 18)", () => {
  it.live("refuses what it cannot read exactly, before reading, saying what to change", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE keyed (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE TABLE keyless (body text)")
      yield* pg.query("CREATE TABLE elsewhere (id int PRIMARY KEY)")
      yield* pg.query("CREATE TABLE narrow (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE PUBLICATION pub FOR TABLE keyed, keyless, narrow (body)")
      const own = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(pg.url), ...fastTiming.advisory })
      const describe = (table: string, where?: string) =>
        Effect.flip(ChunkReader.describe(own.sql, { publication: "pub", schema: "public", table, where, serverVersion: 180000 }))
      const message = (e: { readonly _tag: string; readonly message: string }) => `${e._tag}: ${e.message}`
      assert.match(message(yield* describe("missing")), /^BackfillRefused: table public.missing does not exist/)
      assert.match(message(yield* describe("elsewhere")), /^BackfillRefused: table public.elsewhere is not in the stream's publication pub: add it/)
      assert.match(message(yield* describe("keyless")), /^BackfillRefused: table public.keyless has no primary key and no replica identity index: .*Add a primary key/)
      assert.match(message(yield* describe("narrow")), /^BackfillRefused: the key of public.narrow \(id\) is not all published: .*leaves out id/)
      for (
        const [where, expected] of [
          ["true) UNION ALL SELECT 1 FROM pg_authid WHERE (true", /closes a parenthesis it did not open/],
          ["id > 1; DROP TABLE keyed", /contains ';'/],
          ["id > 1 -- comment", /contains a comment/],
          ["", /is empty/],
          ["no_such_column > 1", /PostgreSQL refuses the backfill's where on public.keyed: .*no_such_column/],
          ["id + 1", /PostgreSQL refuses the backfill's where on public.keyed: .*must be type boolean/]
        ] as const
      ) {
        assert.match(message(yield* describe("keyed", where)), expected, where)
      }
      assert.deepStrictEqual(yield* pg.query<{ n: number }>("SELECT count(*)::int AS n FROM keyed"), [{ n: 0 }]) // the table is still there
    }))

  it.live("chunks follow a composite key in PostgreSQL's order, apply the publication's row filter, and read rows as the stream delivers them", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      // a text key part with a collation JavaScript would not sort the same way, and a TOASTed value
      yield* pg.query(`CREATE TABLE items (region text COLLATE "C", id int, body text, doc jsonb, amount numeric, at timestamptz, PRIMARY KEY (region, id))`)
      yield* pg.query("ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL")
      yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items WHERE (id <> 13)")
      const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(pg.url), ...fastTiming.advisory })
      const events: Array<ReplicationEvent> = []
      yield* Effect.forkScoped(ownership.supervisor.run(Delivery.run({ ...deliveryOptions, url: Redacted.make(pg.url), instanceId: "a", sql: ownership.sql }, (connection) =>
        Stream.runForEach(connection.events, (event) =>
          Effect.andThen(Effect.sync(() => void events.push(event)), event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void)))))
      yield* eventually(Effect.map(ownership.sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_replication_slots WHERE temporary`, (r) => (r[0]!.n > 0 ? true : undefined)), 20_000, "streaming")
      yield* pg.query(`INSERT INTO items
        SELECT r, g, CASE WHEN g = 7 THEN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i) ELSE 'row ' || g END,
               jsonb_build_object('g', g, 'big', 12345678901234567890), g * 1.5, '2026-12-04 10:00:00+00'::timestamptz + g * interval '1 hour'
          FROM unnest(ARRAY['a', 'B', 'b', 'Z', 'ä']) r, generate_series(1, 20) g`)
      const changes = () => events.filter((e) => e._tag === "Change")
      yield* eventually(Effect.sync(() => (changes().length >= 95 ? true : undefined)), 20_000, "95 changes")
      const streamed = new Map(changes().map((e) => e._tag === "Change" ? [`${e.new!.region}/${e.new!.id}`, Values.rowJson(e.new!, e.columns)] : ["", ""]))

      const shape = yield* ChunkReader.describe(ownership.sql, { publication: "slotkeeper_orders", schema: "public", table: "items", serverVersion: 180000 })
      assert.deepStrictEqual(shape.key.map((p) => shape.relation.columns[p]!.name), ["region", "id"])
      assert.strictEqual(shape.rowFilter, "(id <> 13)")
      const types = TypeCatalog.make(ownership.sql)
      yield* types.learn(shape.relation)
      const rows = new Rows(types)
      const client = new NodePg.Client(yield* Connector.nodePg(Redacted.make(pg.url), "slotkeeper-test", 10_000))
      yield* Effect.acquireRelease(Effect.promise(() => client.connect()), () => Effect.promise(() => client.end()))
      const read: Array<[string, string]> = []
      let after: ReadonlyArray<string> | undefined
      let chunks = 0
      for (;;) {
        const chunk = yield* ChunkReader.read(client, shape, after, 7, 10_000)
        chunks++
        assert.isTrue(chunk.snapshot.xmin <= chunk.snapshot.xmax)
        for (const texts of chunk.rows) {
          const row = rows.build(shape.relation, texts).row
          read.push([`${row.region}/${row.id}`, Values.rowJson(row, shape.relation.columns.map((c) => c.name))])
        }
        if (chunk.rows.length < 7) break
        after = ChunkReader.keyOf(shape, chunk.rows.at(-1)!)
      }
      // every row once, in PostgreSQL's key order (COLLATE "C": 'B' < 'Z' < 'a' < 'b' < 'ä'), the filter applied
      const order = yield* pg.query<{ k: string }>(`SELECT region || '/' || id AS k FROM items WHERE id <> 13 ORDER BY region, id`)
      assert.deepStrictEqual(read.map(([k]) => k), order.map((r) => r.k))
      assert.strictEqual(read.length, 95)
      assert.strictEqual(chunks, 14)
      // byte for byte what the stream delivered, the TOASTed value included
      assert.deepStrictEqual(new Map(read), streamed)
      assert.isAbove(read.find(([k]) => k === "a/7")![1].length, 12_000)
    }))
})
