/**
 * `--schema` (SLOTKEEPER_SCHEMA): where slotkeeper keeps its tables — `run` creates them there, and `status`, `check`
 * and `slots` read them there; a schema that is not a lowercase identifier exits 2 before anything connects.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, ids, start, streaming, until } from "./cli-helpers.ts"

describe("--schema (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("run keeps its tables in the schema given; status, check and slots find the stream there, and not in the default one", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a"], { SLOTKEEPER_SCHEMA: "ops_cdc" })
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'x')")
      yield* until(() => (ids(a).length >= 1 ? true : undefined), 20_000, "a row")
      assert.deepStrictEqual(yield* pg.query("SELECT nspname FROM pg_namespace WHERE nspname IN ('slotkeeper', 'ops_cdc')"), [{ nspname: "ops_cdc" }])

      const status = yield* cli("status", "--database-url", pg.url, "--schema", "ops_cdc", "--json")
      assert.strictEqual(status.code, 0, status.stderr)
      const [stream] = (JSON.parse(status.stdout) as { streams: Array<Record<string, any>> }).streams
      assert.include(stream!.owner, { instance: "a", epoch: 1 })
      assert.include(stream!.slots[0], { slot: "slotkeeper_default_1", state: "active" })
      // the default schema has no stream
      const elsewhere = yield* cli("status", "--database-url", pg.url, "--json")
      assert.deepStrictEqual(JSON.parse(elsewhere.stdout), { streams: [] })

      const slots = yield* cli("slots", "list", "--database-url", pg.url, "--schema", "ops_cdc", "--json")
      assert.strictEqual(slots.code, 0, slots.stderr)
      assert.deepStrictEqual((JSON.parse(slots.stdout) as { slots: Array<{ slotName: string; current: boolean }> }).slots.map((s) => [s.slotName, s.current]), [["slotkeeper_default_1", true]])

      // check finds the stream's slot in the schema given: its failover check (17+) runs only for a slot it found
      const failoverChecks = (schema: ReadonlyArray<string>) =>
        Effect.map(cli("check", "--database-url", pg.url, ...schema, "--table", "items", "--json"), (r) =>
          (JSON.parse(r.stdout) as { checks: Array<{ name: string }> }).checks.filter((c) => c.name === "failover").length)
      assert.isAbove(yield* failoverChecks(["--schema", "ops_cdc"]), 0)
      assert.strictEqual(yield* failoverChecks([]), 0)

      for (const command of [["status"], ["check", "--table", "items"], ["slots", "list"]]) {
        const bad = yield* cli(...command, "--database-url", "postgres://someone@127.0.0.1:1/x", "--schema", "Ops-CDC")
        assert.strictEqual(bad.code, 2, `${command.join(" ")}: ${bad.stderr}`)
        assert.match(bad.stderr, /^slotkeeper: --schema: schema "Ops-CDC" is not valid: use a lowercase identifier/)
      }
      const badRun = yield* cli("run", "--database-url", "postgres://someone@127.0.0.1:1/x", "--table", "items", "--schema", "Ops-CDC")
      assert.strictEqual(badRun.code, 2, badRun.stderr)
      assert.match(badRun.stderr, /^slotkeeper: --schema: schema "Ops-CDC" is not valid/)
    }))
})
