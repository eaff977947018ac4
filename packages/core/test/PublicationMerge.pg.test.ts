/**
 * Several live subscriptions of one table, with different row filters and column lists, merged as PostgreSQL merges a
 * table's publications: the filters OR'ed, the column lists united, no filter (or no list) wins. Each subscription is
 * told what the merged publication delivers (`PublicationManager.delivered`), and what arrives is exactly that —
 * PostgreSQL is the oracle: the rows the merged filter selects, as `SELECT` gives them. On PostgreSQL 15 and 18.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import * as Delivery from "../src/replication/Delivery.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually } from "./ownership-helpers.ts"
import { publicationTables, startManager } from "./publication-helpers.ts"

describe.each([15, 18])("PublicationManager: subscriptions of one table merged (real PostgreSQL %i)", (major) => {
  it.live("filters OR'ed and columns united, each subscription told what is delivered; a removal narrows it again; one without a filter or a list widens it to the whole table", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      yield* pg.query("CREATE TABLE orders (id int PRIMARY KEY, region text, total int, note text)")
      const received: Array<Record<string, string>> = []
      const { manager } = yield* startManager("a", pg.url, {
        // inserts only: filters and column lists on columns outside the primary key would otherwise need them in the
        // replica identity (PostgreSQL would refuse the application's UPDATE and DELETE)
        publication: { publishes: { insert: true, update: false, delete: false, truncate: true } },
        alongside: (ownership) =>
          Delivery.run({ ...deliveryOptions, url: Redacted.make(pg.url), instanceId: "a", sql: ownership.sql }, (connection) =>
            Stream.runForEach(connection.events, (event) =>
              event._tag === "Change" && event.table === "orders"
                ? Effect.sync(() => void received.push(Object.fromEntries(Object.entries(event.new ?? {}).map(([k, v]) => [k, String(v)]))))
                : event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void))
      })
      const arrived = (id: number) => eventually(Effect.sync(() => (received.some((r) => r.id === String(id)) ? true : undefined)), 20_000, `row ${id}`)
      /** What PostgreSQL selects for the merged publication: its columns, its rows (a marker row excluded). */
      const oracle = (columns: string, where: string, ids: ReadonlyArray<number>) =>
        Effect.map(pg.query(`SELECT ${columns} FROM orders WHERE (${where}) AND id = ANY('{${ids.join(",")}}'::int[]) ORDER BY id`), (rows) =>
          (rows as Array<Record<string, unknown>>).map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, String(v)]))))
      const since = (from: number) => received.slice(from).filter((r) => Number(r.id) < 1000)

      yield* manager.add({ id: "eu", table: { name: "orders" }, columns: ["id", "region"], where: "region = 'eu'" })
      yield* manager.add({ id: "big", table: { name: "orders" }, columns: ["id", "total"], where: "total > 100" })
      // one table in the publication: the columns of both, the rows of either
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.orders [id,region,total] WHERE ((region = 'eu'::text) OR (total > 100))"])
      const both = { schema: "public", name: "orders", columns: ["id", "region", "total"], where: "(region = 'eu') OR (total > 100)" }
      assert.deepStrictEqual(yield* manager.delivered("eu"), both)
      assert.deepStrictEqual(yield* manager.delivered("big"), both)
      assert.isUndefined(yield* manager.delivered("nobody"))

      yield* pg.query("INSERT INTO orders VALUES (1, 'eu', 5, 'n1'), (2, 'us', 500, 'n2'), (3, 'us', 5, 'n3'), (4, 'eu', 500, 'n4')")
      yield* pg.query("INSERT INTO orders VALUES (1001, 'eu', 1, 'marker')")
      yield* arrived(1001)
      assert.deepStrictEqual(since(0), yield* oracle("id, region, total", "region = 'eu' OR total > 100", [1, 2, 3, 4]))

      // "big" leaves: what "eu" asked for only
      yield* manager.remove("big")
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.orders [id,region] WHERE (region = 'eu'::text)"])
      assert.deepStrictEqual(yield* manager.delivered("eu"), { schema: "public", name: "orders", columns: ["id", "region"], where: "region = 'eu'" })
      const mark = received.length
      yield* pg.query("INSERT INTO orders VALUES (5, 'us', 900, 'n5'), (6, 'eu', 1, 'n6')")
      yield* pg.query("INSERT INTO orders VALUES (1002, 'eu', 1, 'marker')")
      yield* arrived(1002)
      assert.deepStrictEqual(since(mark), yield* oracle("id, region", "region = 'eu'", [5, 6]))

      // one without a filter and a column list: the whole table, for everyone
      yield* manager.add({ id: "all", table: { name: "orders" } })
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.orders"])
      assert.deepStrictEqual(yield* manager.delivered("eu"), { schema: "public", name: "orders", columns: undefined, where: undefined })
      const mark2 = received.length
      yield* pg.query("INSERT INTO orders VALUES (7, 'us', 1, 'n7')")
      yield* pg.query("INSERT INTO orders VALUES (1003, 'us', 1, 'marker')")
      yield* arrived(1003)
      assert.deepStrictEqual(since(mark2), yield* oracle("*", "true", [7]))
    }))
})
