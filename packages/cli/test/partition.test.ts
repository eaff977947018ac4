/**
 * `--partition-root` (PostgreSQL's `publish_via_partition_root`): a partitioned table's changes named by it — after
 * PostgreSQL's `src/test/subscription/t/013_partition.pl` (a partition attached with another column order, a default
 * partition, updates within and across partitions, ATTACH and DETACH PARTITION mid-stream), `028_row_filter.pl` and
 * `031_column_list.pl` on a partitioned root (a row filter and a column list through the root, rows moving into and out
 * of the filter). PostgreSQL is the oracle: replaying a stream's change lines by key gives exactly the rows the
 * server has (with the rows a DETACH took out of the table, which a subscriber keeps too). Through `slotkeeper run`,
 * three streams of one database at once, on PostgreSQL 15 and 18.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, start, until, untilEffect } from "./cli-helpers.ts"

type Row = Record<string, unknown>
type Line = { type: string; op?: string; table?: string; new?: Row | null; old?: Row | null }

/** A consumer keyed on `a`: the rows after applying every change line in order, as `[a, b]` sorted by `a`. */
const replay = (lines: ReadonlyArray<Line>): Array<[string, string | null]> => {
  const rows = new Map<string, string | null>()
  for (const l of lines) {
    if (l.type !== "change") continue
    if (l.op === "delete") rows.delete(String(l.old!.a))
    else {
      // an update's old key is there when the key changed
      if (l.op === "update" && l.old != null) rows.delete(String(l.old.a))
      rows.set(String(l.new!.a), l.new!.b === undefined ? null : l.new!.b as string | null)
    }
  }
  return [...rows].sort((x, y) => Number(x[0]) - Number(y[0]))
}

describe.each([15, 18])("--partition-root (the CLI as child processes, real PostgreSQL %i)", (major) => {
  it.live("changes of every partition named by the root, in the root's column order, through ATTACH and DETACH; a filter and a column list on the root; without the option, the partitions' names", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      // 013_partition.pl's tab1: a partition attached with its columns in another order, one created, a default
      yield* pg.query("CREATE TABLE tab1 (a int PRIMARY KEY, b text) PARTITION BY LIST (a)")
      yield* pg.query("CREATE TABLE tab1_1 (b text, a int NOT NULL)")
      yield* pg.query("ALTER TABLE tab1 ATTACH PARTITION tab1_1 FOR VALUES IN (1, 2, 3)")
      yield* pg.query("CREATE TABLE tab1_2 PARTITION OF tab1 FOR VALUES IN (4, 5, 6)")
      yield* pg.query("CREATE TABLE tab1_def PARTITION OF tab1 DEFAULT")

      // a row filter on a partitioned table is the partitions' business unless published through the root: exit 2,
      // PostgreSQL's own refusal with what to change
      const refused = yield* cli("run", "--database-url", pg.url, "--stream-id", "nope", "--table", "tab1 WHERE (a > 3)")
      assert.strictEqual(refused.code, 2, refused.stderr)
      assert.match(refused.stderr, /--table: .*publish_via_partition_root/s)

      const root = yield* start(["--database-url", pg.url, "--stream-id", "root", "--table", "tab1", "--partition-root", "--instance-id", "r"])
      const leaves = yield* start(["--database-url", pg.url, "--stream-id", "leaves", "--table", "tab1", "--instance-id", "l"])
      // 028_row_filter.pl and 031_column_list.pl: a filter and a column list on the partitioned root (SLOTKEEPER_PARTITION_ROOT)
      const filtered = yield* start(["--database-url", pg.url, "--stream-id", "filtered", "--table", "tab1 (a) WHERE (a > 3)", "--instance-id", "f"], { SLOTKEEPER_PARTITION_ROOT: "true" })
      yield* untilEffect(
        Effect.map(pg.query("SELECT count(*)::int AS n FROM pg_replication_slots WHERE temporary AND active"), (r) => ((r as Array<{ n: number }>)[0]!.n >= 3 ? true : undefined)),
        60_000,
        "three replication connections"
      ).pipe(Effect.onError(() => Effect.sync(() => console.log([root, leaves, filtered].map((r) => r.stderr().slice(-3000)).join("\n-----\n")))))
      assert.deepStrictEqual(yield* pg.query("SELECT pubname::text AS pubname, pubviaroot FROM pg_publication ORDER BY 1"), [
        { pubname: "slotkeeper_filtered", pubviaroot: true },
        { pubname: "slotkeeper_leaves", pubviaroot: false },
        { pubname: "slotkeeper_root", pubviaroot: true }
      ])

      yield* pg.query("INSERT INTO tab1 VALUES (1, 'one'), (0, 'zero'), (4, 'four'), (5, 'five')")
      yield* pg.query("UPDATE tab1 SET b = 'one, updated' WHERE a = 1")
      yield* pg.query("UPDATE tab1 SET a = 2 WHERE a = 1") // the key, within tab1_1
      yield* pg.query("UPDATE tab1 SET a = 6 WHERE a = 4") // within tab1_2
      yield* pg.query("UPDATE tab1 SET a = 3 WHERE a = 5") // tab1_2 to tab1_1, out of the filter
      yield* pg.query("UPDATE tab1 SET a = 7 WHERE a = 0") // within the default partition, into the filter
      yield* pg.query("DELETE FROM tab1 WHERE a = 2")
      // ATTACH: a partition with yet another column order
      yield* pg.query("CREATE TABLE tab1_3 (b text, a int NOT NULL)")
      yield* pg.query("ALTER TABLE tab1 ATTACH PARTITION tab1_3 FOR VALUES IN (8, 9)")
      yield* pg.query("INSERT INTO tab1 VALUES (8, 'eight'), (9, 'nine')")
      yield* pg.query("UPDATE tab1 SET b = 'nine, updated' WHERE a = 9")
      // DETACH: tab1_2 (holding 6) is no longer tab1's; what is written to it is not tab1's change
      yield* pg.query("ALTER TABLE tab1 DETACH PARTITION tab1_2")
      yield* pg.query("INSERT INTO tab1_2 VALUES (5, 'detached')")
      yield* pg.query("INSERT INTO tab1 VALUES (10, 'ten'), (100, 'last')")

      const lines = (r: { lines: Array<Record<string, unknown>> }) => r.lines as Array<Line>
      for (const [name, r] of [["root", root], ["leaves", leaves], ["filtered", filtered]] as const) {
        yield* until(() => (lines(r).some((l) => l.type === "change" && String(l.new?.a) === "100") ? true : undefined), 30_000, `${name}: the last row`)
      }
      // the oracle: the server's rows of tab1, and those the DETACH took with it (not what was written to it after)
      const expected = ((yield* pg.query(
        "SELECT a::text AS a, b FROM tab1 UNION ALL SELECT a::text, b FROM tab1_2 WHERE b <> 'detached' ORDER BY 1"
      )) as Array<{ a: string; b: string }>).sort((x, y) => Number(x.a) - Number(y.a))
      const changes = (r: { lines: Array<Record<string, unknown>> }) => lines(r).filter((l) => l.type === "change")

      // through the root: every change named tab1, its rows in tab1's column order, the server's rows when replayed
      assert.deepStrictEqual([...new Set(changes(root).map((l) => l.table))], ["tab1"])
      assert.isTrue(changes(root).every((l) => Object.keys(l.new ?? l.old ?? {})[0] === "a"), "the root's column order (a, b), not a partition's (b, a)")
      assert.deepStrictEqual(replay(lines(root)), expected.map((r) => [r.a, r.b]))
      // the row moved across partitions is a delete and an insert of tab1
      assert.includeDeepMembers(changes(root).map((l) => [l.op, String((l.new ?? l.old)!.a)]), [["delete", "5"], ["insert", "3"]])

      // without the option: the same rows, named by their partitions
      const leafNames = [...new Set(changes(leaves).map((l) => l.table))].sort()
      assert.deepStrictEqual(leafNames, ["tab1_1", "tab1_2", "tab1_3", "tab1_def"])
      assert.deepStrictEqual(replay(lines(leaves)), expected.map((r) => [r.a, r.b]))

      // the filter and the column list through the root: only a, only rows with a > 3, moving in and out as updates do
      assert.deepStrictEqual([...new Set(changes(filtered).map((l) => l.table))], ["tab1"])
      assert.isTrue(changes(filtered).every((l) => Object.keys(l.new ?? l.old ?? {}).join() === "a"), "only the listed column")
      assert.deepStrictEqual(replay(lines(filtered)).map(([a]) => a), expected.filter((r) => Number(r.a) > 3).map((r) => r.a))
      // 7 entered the filter by an update: an insert line; 5 left it by moving to 3: a delete line
      assert.includeDeepMembers(changes(filtered).map((l) => [l.op, String((l.new ?? l.old)!.a)]), [["insert", "7"], ["delete", "5"]])
    }))
})
