/**
 * `--generated-columns` (PostgreSQL 18's `publish_generated_columns`), after PostgreSQL's
 * `src/test/subscription/t/011_generated.pl`: a stored generated column is in the change lines and in the initial
 * snapshot by default on 18 (its value as PostgreSQL computed it), left out with `none`; a column list names a
 * generated column either way, and only the columns it names; a virtual generated column (18) is never published. On
 * 15 generated columns cannot be streamed: `check` says so, and asking for them exits 2.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, start, until, untilEffect } from "./cli-helpers.ts"

type Line = { type: string; op?: string; table?: string; new?: Record<string, unknown> | null; old?: Record<string, unknown> | null }

const lines = (r: { lines: Array<Record<string, unknown>> }) => (r.lines as Array<Line>).filter((l) => l.type === "change")
/** A table's rows as the lines leave them, by `a` (the snapshot's reads, then the changes; no deletes here). */
const rowsOf = (r: { lines: Array<Record<string, unknown>> }, table: string) => {
  const rows = new Map<string, Record<string, string>>()
  for (const l of lines(r)) {
    if (l.table !== table || l.new == null) continue
    // an update that changed the key names the old one
    if (l.op === "update" && l.old != null) rows.delete(String(l.old.a))
    rows.set(String(l.new.a ?? JSON.stringify(l.new)), Object.fromEntries(Object.entries(l.new).map(([k, v]) => [k, String(v)])))
  }
  return [...rows.values()]
}

const checkOf = (url: string, args: ReadonlyArray<string>) =>
  Effect.map(cli("check", "--database-url", url, ...args, "--json"), (r) => (JSON.parse(r.stdout) as { checks: Array<{ name: string; level: string; message: string }> }).checks)

describe("--generated-columns (the CLI as child processes, real PostgreSQL 18)", () => {
  it.live("stored generated columns streamed by default, snapshot included, as PostgreSQL computed them; none leaves them out; a column list names them either way; virtual ones never", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE tab1 (a int PRIMARY KEY, b int GENERATED ALWAYS AS (a * 2) STORED, c int GENERATED ALWAYS AS (a * 3) VIRTUAL)")
      yield* pg.query("CREATE TABLE tab2 (a int PRIMARY KEY, gen1 int GENERATED ALWAYS AS (a * 2) STORED)")
      yield* pg.query("CREATE TABLE tab3 (a int PRIMARY KEY, gen1 int GENERATED ALWAYS AS (a * 2) STORED, gen2 int GENERATED ALWAYS AS (a * 2) STORED)")
      // the initial sync's rows
      yield* pg.query("INSERT INTO tab1 (a) VALUES (1), (2), (3)")

      const checks = yield* checkOf(pg.url, ["--table", "tab1"])
      assert.deepStrictEqual(checks.filter((c) => c.name === "generated columns of public.tab1").map((c) => [c.level, c.message]), [
        ["ok", "b: published (publish_generated_columns = stored)"],
        ["warn", "c: virtual generated columns are never published by PostgreSQL: absent from the change lines"]
      ])
      assert.deepStrictEqual((yield* checkOf(pg.url, ["--table", "tab1", "--generated-columns", "none"])).filter((c) => c.name === "generated columns of public.tab1").map((c) => c.level), ["info", "warn"])
      const bad = yield* cli("run", "--database-url", pg.url, "--table", "tab1", "--generated-columns", "virtual")
      assert.strictEqual(bad.code, 2, bad.stderr)
      assert.match(bad.stderr, /--generated-columns: "virtual": use stored or none/)

      // the default (stored), with the snapshot; 011_generated.pl's column lists: tab2 (gen1) with none, tab3 (gen1) with stored
      const stored = yield* start(["--database-url", pg.url, "--stream-id", "stored", "--table", "tab1", "--table", "tab3 (a, gen1)", "--snapshot", "initial", "--instance-id", "s"])
      const none = yield* start(["--database-url", pg.url, "--stream-id", "none", "--table", "tab1", "--table", "tab2 (a, gen1)", "--generated-columns", "none", "--instance-id", "n"])
      yield* untilEffect(
        Effect.map(pg.query("SELECT count(*)::int AS n FROM pg_replication_slots WHERE temporary AND active"), (r) => ((r as Array<{ n: number }>)[0]!.n >= 2 ? true : undefined)),
        60_000,
        "two replication connections"
      )
      assert.deepStrictEqual(yield* pg.query("SELECT pubname::text AS pubname, pubgencols::text AS gencols FROM pg_publication ORDER BY 1"), [
        { pubname: "slotkeeper_none", gencols: "n" },
        { pubname: "slotkeeper_stored", gencols: "s" }
      ])
      yield* pg.query("INSERT INTO tab1 VALUES (4), (5)")
      yield* pg.query("UPDATE tab1 SET a = 6 WHERE a = 5")
      yield* pg.query("INSERT INTO tab2 (a) VALUES (1), (2)")
      yield* pg.query("INSERT INTO tab3 (a) VALUES (1), (2)")
      yield* pg.query("INSERT INTO tab1 VALUES (100)")
      for (const [name, r] of [["stored", stored], ["none", none]] as const) {
        yield* until(() => (lines(r).some((l) => l.table === "tab1" && String(l.new?.a) === "100") ? true : undefined), 60_000, `${name}: the last row`)
      }

      // the oracle: PostgreSQL's own values of the stored generated column; the virtual one never in a line
      const server = (yield* pg.query("SELECT a::text AS a, b::text AS b FROM tab1 ORDER BY tab1.a")) as Array<{ a: string; b: string }>
      assert.deepStrictEqual(rowsOf(stored, "tab1").sort((x, y) => Number(x.a) - Number(y.a)), server)
      assert.includeMembers(lines(stored).filter((l) => l.op === "read").map((l) => String(l.new?.b)), ["2", "4", "6"], "the snapshot's rows carry b")
      // a schema line before the table's first row (a read row of the snapshot, or a change): b in it, c (virtual) not
      const all = stored.lines as Array<Line & { columns?: Array<{ name: string; type: string }> }>
      const firstRow = all.findIndex((l) => l.type === "change" && l.table === "tab1")
      const shape = all.slice(0, firstRow).find((l) => l.type === "schema" && l.table === "tab1")
      assert.deepStrictEqual(shape?.columns?.map((c) => `${c.name} ${c.type}`), ["a integer", "b integer"])
      // (no snapshot in this one: the rows written while it streamed)
      assert.deepStrictEqual(rowsOf(none, "tab1").sort((x, y) => Number(x.a) - Number(y.a)), server.filter((r) => Number(r.a) > 3).map((r) => ({ a: r.a })))
      assert.isTrue([...lines(stored), ...lines(none)].every((l) => !("c" in (l.new ?? {}))), "the virtual column is never published")
      // a column list names a generated column even with none; with stored, only the generated columns it names
      assert.deepStrictEqual(rowsOf(none, "tab2"), [{ a: "1", gen1: "2" }, { a: "2", gen1: "4" }])
      assert.deepStrictEqual(rowsOf(stored, "tab3"), [{ a: "1", gen1: "2" }, { a: "2", gen1: "4" }])
    }))
})

describe("--generated-columns (the CLI, real PostgreSQL 15)", () => {
  it.live("generated columns cannot be streamed before 18: check says so, asking for them exits 2 before anything is created, and the default leaves them out", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 15 })
      yield* pg.query("CREATE TABLE tab1 (a int PRIMARY KEY, b int GENERATED ALWAYS AS (a * 2) STORED)")
      const checks = yield* checkOf(pg.url, ["--table", "tab1"])
      assert.deepStrictEqual(checks.filter((c) => c.name === "generated columns of public.tab1").map((c) => [c.level, c.message]), [
        ["warn", "b: PostgreSQL 15 cannot publish generated columns (18+): they are absent from the change lines"]
      ])
      assert.strictEqual((yield* checkOf(pg.url, ["--table", "tab1", "--generated-columns", "stored"])).find((c) => c.name === "generated columns")?.level, "error")
      const refused = yield* cli("run", "--database-url", pg.url, "--table", "tab1", "--generated-columns", "stored")
      assert.strictEqual(refused.code, 2, refused.stderr)
      assert.match(refused.stderr, /needs PostgreSQL 18\+/)
      assert.deepStrictEqual(yield* pg.query("SELECT pubname FROM pg_publication"), [])

      const r = yield* start(["--database-url", pg.url, "--table", "tab1", "--instance-id", "a"])
      yield* untilEffect(
        Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE temporary AND active"), (rows) => (rows.length > 0 ? true : undefined)),
        30_000,
        "a replication connection"
      )
      yield* pg.query("INSERT INTO tab1 VALUES (4)")
      yield* until(() => (lines(r).length > 0 ? true : undefined), 30_000, "the row")
      assert.deepStrictEqual(rowsOf(r, "tab1"), [{ a: "4" }])
    }))
})
