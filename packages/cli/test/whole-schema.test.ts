/**
 * `--table 'sales.*'`: every table of a schema, including tables created while the stream runs — except a table that
 * cannot be published without breaking the application's writes (no replica identity while updates and deletes are
 * published): never published, reported in `/health`, `/metrics` and the log, its UPDATE still works; given a
 * primary key, it is added. Through `slotkeeper run`, on PostgreSQL 15 and 18.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, freePort, get, start, streaming, until, untilEffect } from "./cli-helpers.ts"

type Line = { type: string; op?: string; table?: string; schema?: string; new?: Record<string, unknown> | null }

describe.each([15, 18])("--table schema.* (the CLI as a child process, real PostgreSQL %i)", (major) => {
  it.live("the schema's tables, one created while running picked up within the watch interval, one without replica identity left out and reported until it has a key", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      yield* pg.query("CREATE SCHEMA sales")
      yield* pg.query("CREATE TABLE sales.orders (id int PRIMARY KEY, total int)")
      yield* pg.query("CREATE TABLE sales.log (msg text)") // no primary key: no replica identity
      yield* pg.query("CREATE TABLE public.other (id int PRIMARY KEY)")
      yield* pg.query("CREATE UNLOGGED TABLE sales.scratch (id int PRIMARY KEY)") // PostgreSQL cannot publish it

      // bad input: exit 2 before anything is created
      const filtered = yield* cli("run", "--database-url", pg.url, "--table", "sales.* WHERE total > 1")
      assert.strictEqual(filtered.code, 2, filtered.stderr)
      assert.match(filtered.stderr, /--table: "sales\.\* WHERE total > 1" has something after \.\*: a schema's tables take no column list or filter/)
      const missing = yield* cli("run", "--database-url", pg.url, "--table", "nosuch.*")
      assert.strictEqual(missing.code, 2, missing.stderr)
      assert.match(missing.stderr, /--table: .*schema nosuch does not exist/)

      // check says the same before anything runs
      const checked = yield* cli("check", "--database-url", pg.url, "--table", "sales.*", "--json")
      const checks = (JSON.parse(checked.stdout) as { checks: Array<{ name: string; level: string; message: string }> }).checks
      assert.deepStrictEqual(checks.filter((c) => c.name === "schema sales" || c.name.startsWith("table sales.")).map((c) => [c.name, c.level]), [["schema sales", "ok"], ["table sales.log", "warn"], ["table sales.scratch", "warn"]])
      assert.strictEqual(checks.find((c) => c.name === "schema sales")?.message, "publishes orders")

      const http = yield* Effect.promise(() => freePort())
      const r = yield* start(["--database-url", pg.url, "--table", "sales.*", "--snapshot", "initial", "--instance-id", "a", "--http-port", String(http)])
      yield* streaming(pg)
      const published = () => Effect.map(pg.query("SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = 'slotkeeper_default' ORDER BY 1"), (rows) => (rows as Array<{ t: string }>).map((x) => x.t))
      assert.deepStrictEqual(yield* published(), ["sales.orders"])
      // left out, and said: /health, /metrics, the log
      const health = (yield* get(http, "/health")).body as { unpublished_tables?: Array<{ table: string; reason: string; message: string }> }
      assert.deepStrictEqual(health.unpublished_tables?.map((t) => [t.table, t.reason]), [["sales.log", "NoReplicaIdentity"], ["sales.scratch", "Unlogged"]])
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${http}/metrics`).then((x) => x.text()))
      assert.match(metrics, /^slotkeeper_tables_unpublished\{[^}]*reason="NoReplicaIdentity"[^}]*\} 1$/m)
      assert.match(r.stderr(), /not publishing sales\.log has no replica identity/)
      // ... and in status (another process: as the owner recorded it)
      const status = yield* cli("status", "--database-url", pg.url, "--json")
      const [stream] = (JSON.parse(status.stdout) as { streams: Array<{ unpublished: Array<{ table: string; reason: string }> }> }).streams
      assert.deepStrictEqual(stream!.unpublished.map((t) => [t.table, t.reason]), [["sales.log", "NoReplicaIdentity"], ["sales.scratch", "Unlogged"]])
      assert.match((yield* cli("status", "--database-url", pg.url)).stdout, /table +sales\.log: NOT PUBLISHED \(NoReplicaIdentity\)/)
      // the application's writes on it still work
      yield* pg.query("INSERT INTO sales.log VALUES ('a')")
      yield* pg.query("UPDATE sales.log SET msg = 'b'")
      yield* pg.query("DELETE FROM sales.log")

      yield* pg.query("INSERT INTO sales.orders VALUES (1, 10)")
      yield* pg.query("INSERT INTO public.other VALUES (1)")
      const lines = () => (r.lines as Array<Line>).filter((l) => l.type === "change")
      yield* until(() => (lines().some((l) => l.table === "orders") ? true : undefined), 30_000, "the first order")

      // a table created while running, and sales.log given a primary key: both in the publication at the next look
      // (the watch interval, 10 s), their rows streamed from then on
      const created = performance.now()
      yield* pg.query("CREATE TABLE sales.items (id int PRIMARY KEY)")
      yield* pg.query("INSERT INTO sales.items VALUES (6)") // before it joins: not a change of the stream, but the snapshot reads it
      yield* pg.query("ALTER TABLE sales.log ADD COLUMN id serial PRIMARY KEY")
      yield* untilEffect(Effect.map(published(), (ts) => (ts.includes("sales.items") && ts.includes("sales.log") ? true : undefined)), 30_000, "sales.items and sales.log published")
      const pickedUp = (performance.now() - created) / 1000
      console.log(`whole schema (PostgreSQL ${major}): sales.items and sales.log published ${pickedUp.toFixed(1)} s after the change`)
      assert.isBelow(pickedUp, 25)
      yield* pg.query("INSERT INTO sales.items VALUES (7)")
      yield* pg.query("INSERT INTO sales.log (msg) VALUES ('keyed')")
      yield* until(() => (lines().some((l) => l.table === "log") ? true : undefined), 30_000, "the keyed log row")
      // only the unlogged one is still left out
      assert.deepStrictEqual(((yield* get(http, "/health")).body as { unpublished_tables?: Array<{ table: string }> }).unpublished_tables?.map((t) => t.table), ["sales.scratch"])
      yield* untilEffect(Effect.map(cli("status", "--database-url", pg.url, "--json"), (x) =>
        (JSON.parse(x.stdout) as { streams: Array<{ unpublished: Array<unknown> }> }).streams[0]!.unpublished.length === 1 ? true : undefined), 20_000, "status: only the unlogged table left out")
      yield* until(() => (lines().some((l) => l.table === "items" && l.op === "read") ? true : undefined), 30_000, "the snapshot's row of sales.items")
      assert.deepStrictEqual(lines().filter((l) => l.op !== "read").map((l) => `${l.op} ${l.schema}.${l.table} ${String(l.new?.id)}`).sort(), [
        "insert sales.items 7", "insert sales.log 1", "insert sales.orders 1"
      ])
      // the snapshot of a table that joined reads it as it is then (rows streamed as changes too, when written before
      // the read): every read row is one the server has, and the row written before it joined is among them
      const rows = (yield* pg.query("SELECT 'sales.items ' || id AS r FROM sales.items UNION ALL SELECT 'sales.log ' || id FROM sales.log")) as Array<{ r: string }>
      const reads = lines().filter((l) => l.op === "read").map((l) => `${l.schema}.${l.table} ${String(l.new?.id)}`)
      assert.includeMembers(rows.map((x) => x.r), reads)
      assert.include(reads, "sales.items 6")
    }))
})
