import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as PgCluster from "../src/PgCluster.ts"
import * as PgVersions from "../src/PgVersions.ts"
import { readInserts } from "./replication-helpers.ts"

// The kit's promise: logical decoding works on every major it ships, oldest and newest at least. The versions
// selected by SLOTKEEPER_PG_VERSIONS are added to these two.
const majors = [...new Set([15, 18, ...PgVersions.matrix()])].sort()

describe.each(majors)("PostgreSQL %i", (major) => {
  it.live("a logical slot can be created and read over the replication protocol (pgoutput)", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      const [version] = yield* pg.query<{ v: number }>("SELECT current_setting('server_version_num')::int / 10000 AS v")
      assert.strictEqual(version?.v, major)
      assert.strictEqual(pg.major, major)
      assert.match(pg.version, new RegExp(`^${major}\\.\\d+$`))
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
      yield* pg.query("CREATE PUBLICATION items_pub FOR TABLE items")
      yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('items_slot', 'pgoutput')")
      yield* pg.query("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
      yield* pg.query("INSERT INTO items VALUES (3, 'three')")
      const rows = yield* readInserts(pg.url, "items_slot", "items_pub", 3)
      assert.deepStrictEqual(rows, [{ id: 1, name: "one" }, { id: 2, name: "two" }, { id: 3, name: "three" }])
      // and with SQL: the slot still holds the changes, since nothing was acknowledged
      const [peek] = yield* pg.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_logical_slot_peek_binary_changes('items_slot', NULL, NULL,
           'proto_version', '1', 'publication_names', 'items_pub') WHERE substr(data, 1, 1) = 'I'::bytea`)
      assert.strictEqual(peek?.n, 3)
    }))
})
