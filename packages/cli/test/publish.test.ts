/**
 * `--publish`: what the stream's publication publishes, PostgreSQL's own `publish` option — scenarios of PostgreSQL's
 * `src/test/subscription/t/010_truncate.pl` (a publication `WITH (publish = insert)` does not replicate TRUNCATE; after
 * `SET (publish = 'insert, truncate')` it does; a TRUNCATE of a published and an unpublished table carries only the
 * published one; a table without a primary key), through `slotkeeper run` as a user runs it, on PostgreSQL 15 and 18.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, start, streaming, until, untilEffect } from "./cli-helpers.ts"

type Line = { type: string; op?: string; table?: string; new?: { a: number }; tables?: Array<{ schema: string; table: string }> }

describe.each([15, 18])("--publish (the CLI as a child process, real PostgreSQL %i)", (major) => {
  it.live("insert only: no update, delete or truncate line, and a table without replica identity is streamed while the application's UPDATE works; then insert,truncate: truncates of the published tables only", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      yield* pg.query("CREATE TABLE tab1 (a int PRIMARY KEY)")
      yield* pg.query("CREATE TABLE tab2 (a int PRIMARY KEY)")
      // no primary key, no replica identity: PostgreSQL refuses its UPDATE and DELETE once a publication publishes them
      yield* pg.query("CREATE TABLE tab5 (a int)")

      // bad input first: exit 2 before anything is created
      const bad = yield* cli("run", "--database-url", pg.url, "--table", "tab2", "--publish", "insert,upsert")
      assert.strictEqual(bad.code, 2, bad.stderr)
      assert.match(bad.stderr, /--publish: "insert,upsert": "upsert" is not an operation; give some of insert, update, delete, truncate/)
      const empty = yield* cli("run", "--database-url", pg.url, "--table", "tab2", "--publish", "")
      assert.strictEqual(empty.code, 2, empty.stderr)
      // the default publishes updates and deletes: tab5 is refused, saying how to stream it
      const refused = yield* cli("run", "--database-url", pg.url, "--table", "tab5")
      assert.strictEqual(refused.code, 2, refused.stderr)
      assert.match(refused.stderr, /--table: .*no replica identity.*publish neither updates nor deletes/s)
      assert.deepStrictEqual(yield* pg.query("SELECT pubname FROM pg_publication"), [])
      // check agrees, with and without --publish
      const checks = (publish: ReadonlyArray<string>) =>
        Effect.map(cli("check", "--database-url", pg.url, "--table", "tab5", ...publish, "--json"), (r) =>
          (JSON.parse(r.stdout) as { checks: Array<{ name: string; level: string }> }).checks.find((c) => c.name === "table public.tab5")?.level)
      assert.strictEqual(yield* checks([]), "error")
      assert.strictEqual(yield* checks(["--publish", "insert,truncate"]), "ok")

      // 010_truncate.pl's pub2: WITH (publish = insert)
      const a = yield* start(["--database-url", pg.url, "--table", "tab2", "--table", "tab5", "--publish", "INSERT", "--instance-id", "a"])
      yield* streaming(pg)
      assert.deepStrictEqual(yield* pg.query("SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = 'slotkeeper_default'"), [
        { pubinsert: true, pubupdate: false, pubdelete: false, pubtruncate: false }
      ])
      yield* pg.query("INSERT INTO tab2 VALUES (1), (2), (3)")
      yield* pg.query("UPDATE tab2 SET a = 13 WHERE a = 3")
      yield* pg.query("DELETE FROM tab2 WHERE a = 1")
      yield* pg.query("INSERT INTO tab5 VALUES (7)")
      // the application's UPDATE and DELETE of the table without replica identity still work
      yield* pg.query("UPDATE tab5 SET a = 8 WHERE a = 7")
      yield* pg.query("DELETE FROM tab5 WHERE a = 8")
      yield* pg.query("TRUNCATE tab2")
      yield* pg.query("INSERT INTO tab2 VALUES (4)")
      const lines = (r: { lines: Array<Record<string, unknown>> }) => r.lines as Array<Line>
      yield* until(() => (lines(a).some((l) => l.table === "tab2" && l.new?.a === 4) ? true : undefined), 30_000, "the last insert")
      assert.deepStrictEqual(
        lines(a).filter((l) => l.type === "change" || l.type === "truncate").map((l) => [l.type, l.op, l.table, l.new?.a]),
        [["change", "insert", "tab2", 1], ["change", "insert", "tab2", 2], ["change", "insert", "tab2", 3], ["change", "insert", "tab5", 7], ["change", "insert", "tab2", 4]]
      )
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0, a.stderr().slice(-2000))

      // ALTER PUBLICATION ... SET (publish = 'insert, truncate'): the next owner's option is the publication's
      const b = yield* start(["--database-url", pg.url, "--table", "tab2", "--table", "tab5", "--publish", "insert, truncate", "--instance-id", "b"])
      yield* streaming(pg)
      const options = () => pg.query("SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = 'slotkeeper_default'")
      yield* untilEffect(Effect.map(options(), (rows) => ((rows as Array<{ pubtruncate: boolean }>)[0]?.pubtruncate === true ? true : undefined)), 20_000, "the publication publishing truncates")
      assert.deepStrictEqual(yield* options(), [{ pubinsert: true, pubupdate: false, pubdelete: false, pubtruncate: true }])
      yield* pg.query("TRUNCATE tab2")
      // tab1 is not published: the truncate line names tab2 only
      yield* pg.query("INSERT INTO tab1 VALUES (1)")
      yield* pg.query("TRUNCATE tab1, tab2")
      yield* pg.query("INSERT INTO tab5 VALUES (9)")
      yield* until(() => (lines(b).some((l) => l.table === "tab5" && l.new?.a === 9) ? true : undefined), 30_000, "the last insert")
      assert.deepStrictEqual(
        lines(b).filter((l) => l.type === "truncate").map((l) => l.tables),
        [[{ schema: "public", table: "tab2" }], [{ schema: "public", table: "tab2" }]]
      )
      assert.deepStrictEqual(lines(b).filter((l) => l.type === "change").map((l) => [l.op, l.table, l.new?.a]), [["insert", "tab5", 9]])
    }))
})
