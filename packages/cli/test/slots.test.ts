import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli } from "./cli-helpers.ts"

describe("slotkeeper slots (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("lists the stream's slots; drops a stale incarnation as the owner; refuses the current slot without --force", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY)")
      // a stream with a current slot (_2) and a retired incarnation (_1) still on the server
      yield* pg.query("CREATE SCHEMA slotkeeper")
      yield* pg.query(`CREATE TABLE slotkeeper.slots (stream_id text NOT NULL, incarnation integer NOT NULL, slot_name text NOT NULL UNIQUE,
        state text NOT NULL, failover boolean NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (stream_id, incarnation))`)
      for (const [n, state] of [[1, "retired"], [2, "active"]] as const) {
        yield* pg.query(`SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_default_${n}', 'pgoutput')`)
        yield* pg.query(`INSERT INTO slotkeeper.slots VALUES ('default', ${n}, 'slotkeeper_default_${n}', '${state}', false)`)
      }
      const listed = yield* cli("slots", "list", "--database-url", pg.url, "--older-than", "0 seconds", "--json")
      assert.strictEqual(listed.code, 0, listed.stderr)
      const slots = (JSON.parse(listed.stdout) as { slots: Array<{ slotName: string; current: boolean; candidate: boolean }> }).slots
      assert.deepStrictEqual(slots.map((s) => [s.slotName, s.current, s.candidate]), [["slotkeeper_default_1", false, true], ["slotkeeper_default_2", true, false]])

      const refused = yield* cli("slots", "drop", "--database-url", pg.url, "--slot", "slotkeeper_default_2")
      assert.strictEqual(refused.code, 1)
      assert.match(refused.stderr, /current slot of stream default: dropping it loses the stream's position .* --force/)

      const dropped = yield* cli("slots", "drop", "--database-url", pg.url, "--older-than", "0 seconds")
      assert.strictEqual(dropped.code, 0, dropped.stderr)
      assert.match(dropped.stdout, /dropped slotkeeper_default_1/)
      assert.deepStrictEqual(yield* pg.query("SELECT slot_name FROM pg_replication_slots ORDER BY 1"), [{ slot_name: "slotkeeper_default_2" }])
      assert.deepStrictEqual(yield* pg.query("SELECT state FROM slotkeeper.slots ORDER BY incarnation"), [{ state: "retired" }, { state: "active" }])
    }))
})
