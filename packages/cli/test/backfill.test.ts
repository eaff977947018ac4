/**
 * Backfills through the CLI (the built `slotkeeper`, real PostgreSQL 18): `slotkeeper backfill` refuses bad input with
 * exit 2 and records nothing; `run --snapshot initial` delivers a table's existing rows as `read` lines alongside the
 * changes, and after SIGKILL mid-backfill the next process resumes it — the file, replayed, is the table.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { cli, freePort, start, streaming, until, untilEffect } from "./cli-helpers.ts"

interface Line {
  readonly type: string
  readonly op?: string
  readonly epoch?: number
  readonly snapshot?: string
  readonly new?: { readonly id: number; readonly body: string } | null
  readonly old?: { readonly id: number } | null
}

/** The file's change lines applied in order: read/insert/update put, delete removes. */
const replay = (path: string) => {
  const rows = new Map<number, string>()
  const lines = readFileSync(path, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as Line)
  for (const l of lines) {
    if (l.type !== "change") continue
    if (l.op === "delete") rows.delete(l.old!.id)
    else rows.set(l.new!.id, l.new!.body)
  }
  return { rows, lines }
}

describe("slotkeeper backfill (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("bad input exits 2 with what to change, and records nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE TABLE keyless (body text)")
      yield* pg.query("CREATE PUBLICATION slotkeeper_default FOR TABLE items, keyless")
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
        [[], /--table: name the table to backfill/],
        [["--table", "missing"], /--table: table public.missing does not exist/],
        [["--table", "keyless"], /--table: table public.keyless has no primary key and no replica identity index/],
        [["--table", "items", "--where", "id > 1; DROP TABLE items"], /contains ';'/],
        [["--table", "items", "--where", "nope > 1"], /PostgreSQL refuses the backfill's where on public.items: .*nope/],
        [["--table", "items (body)"], /give a condition with --where, not in --table/],
        [["--table", "items", "--stream-id", "Bad-Id"], /--stream-id/]
      ]
      for (const [args, expected] of cases) {
        const r = yield* cli("backfill", "--database-url", pg.url, ...args)
        assert.strictEqual(r.code, 2, `${args.join(" ")}: ${r.stderr}`)
        assert.match(r.stderr.trim().split("\n").at(-1)!, expected, args.join(" "))
      }
      const [recorded] = yield* pg.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_class WHERE relname = 'backfills'")
      assert.strictEqual(recorded!.n, 0, "nothing recorded")
      // a good request is recorded, and listed
      const ok = yield* cli("backfill", "--database-url", pg.url, "--table", "items", "--where", "id > 10")
      assert.strictEqual(ok.code, 0, ok.stderr)
      assert.match(ok.stdout, /^backfill bf_\S+ of public.items: requested/)
      const listed = yield* cli("backfill", "--database-url", pg.url, "--list")
      assert.match(listed.stdout, /bf_\S+ {2}public.items {2}running {2}0 rows in 0 chunks {2}where id > 10/)
    }))

  it.live("run --snapshot initial: existing rows as read lines alongside the changes; SIGKILL mid-backfill, the next process resumes; the file replayed is the table", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("INSERT INTO items SELECT g, 'existing ' || g FROM generate_series(1, 100000) g")
      const dir = mkdtempSync(join(tmpdir(), "slotkeeper-backfill-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const path = join(dir, "changes.ndjson")
      const args = ["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--sink", `file:${path}`, "--snapshot", "initial", "--chunk-size", "2000"]
      const reads = () => (readFileSync(path, "utf8").match(/"op":"read"/g) ?? []).length
      const first = yield* start(args)
      yield* streaming(pg)
      let next = 200001
      const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const at = 1 + Math.floor(Math.random() * 100000)
        yield* pg.query(`UPDATE items SET body = 'updated' WHERE id BETWEEN ${at} AND ${at + 10}`)
        yield* pg.query(`DELETE FROM items WHERE id = ${1 + Math.floor(Math.random() * 100000)}`)
        yield* pg.query(`INSERT INTO items VALUES (${next++}, 'new')`)
        yield* Effect.sleep("5 millis")
      }).pipe(Effect.ignore)))
      yield* untilEffect(Effect.map(pg.query<{ chunks: number }>("SELECT chunks::int AS chunks FROM slotkeeper.backfills").pipe(Effect.orElseSucceed(() => [])), (r) => ((r[0]?.chunks ?? 0) >= 10 ? true : undefined)), 60_000, "10 chunks saved")
      first.child.kill("SIGKILL")
      yield* Effect.promise(() => first.exited)
      const [saved] = yield* pg.query<{ chunks: number; rows: number; state: string }>("SELECT chunks::int AS chunks, rows::int AS rows, state FROM slotkeeper.backfills")
      assert.strictEqual(saved!.state, "running")
      // status shows the backfill's progress against PostgreSQL's estimate of the table (known once it is analyzed)
      yield* pg.query("ANALYZE items")
      const midway = yield* cli("status", "--database-url", pg.url, "--json")
      const [shown] = (JSON.parse(midway.stdout) as { streams: Array<{ backfills: Array<{ table: string; state: string; rows: number; chunks: number; estimatedRows: number | null }> }> }).streams[0]!.backfills
      assert.deepStrictEqual([shown!.table, shown!.state, shown!.chunks], ["public.items", "running", saved!.chunks])
      assert.isAbove(shown!.rows, 0)
      assert.isAbove(shown!.estimatedRows ?? 0, 50000)
      const text = yield* cli("status", "--database-url", pg.url)
      assert.match(text.stdout, /backfill {5}bf_\S+ public.items: running, [\d,]+ rows of ~[\d,]+ \(\d+%\) in \d+ chunks, [\d,]+ rows\/s on average, about \d+ s left/)
      const port = yield* Effect.promise(() => freePort())
      const second = yield* start([...args.map((a) => (a === "a" ? "b" : a)), "--http-port", String(port)])
      yield* untilEffect(Effect.map(pg.query<{ state: string }>("SELECT state FROM slotkeeper.backfills"), (r) => (r[0]?.state === "done" ? true : undefined)), 120_000, "the backfill done")
      yield* Fiber.interrupt(writer)
      yield* pg.query("INSERT INTO items VALUES (999999, 'last')")
      yield* until(() => (replay(path).rows.has(999999) ? true : undefined), 30_000, "the last row delivered")
      // /metrics counts the rows this process delivered and saved for the backfill
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()))
      const counted = Number(/slotkeeper_backfill_rows_total\{[^}]*table="public\.items"[^}]*\} (\d+)/.exec(metrics)?.[1] ?? -1)
      const [end] = yield* pg.query<{ rows: number }>("SELECT rows::int AS rows FROM slotkeeper.backfills ORDER BY requested_at LIMIT 1")
      assert.isAbove(counted, 0, metrics)
      assert.strictEqual(counted, end!.rows - saved!.rows)
      // progress for dashboards: rows saved by every owner (the first process's included), of PostgreSQL's estimate
      const gauge = (name: string) => Number(new RegExp(`${name}\\{[^}]*table="public\\.items"[^}]*\\} (\\S+)`).exec(metrics)?.[1] ?? Number.NaN)
      assert.strictEqual(gauge("slotkeeper_backfill_saved_rows"), end!.rows)
      assert.isAbove(gauge("slotkeeper_backfill_estimated_rows"), 50000)
      assert.strictEqual(gauge("slotkeeper_backfill_running"), 0, "done: no longer running")
      // --wait follows a backfill to its end (off a terminal: one line, at the end)
      const waited = yield* cli("backfill", "--database-url", pg.url, "--table", "items", "--where", "id <= 5000", "--wait")
      assert.strictEqual(waited.code, 0, waited.stderr)
      assert.match(waited.stdout.trim().split("\n").at(-1)!, /^public\.items: done, [\d,]+ of about [\d,]+ rows \(100%\)/)
      second.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => second.exited), 0)
      assert.match(second.stderr(), /backfill bf_\S+ of public.items resumes after the last chunk saved/)
      const { rows, lines } = replay(path)
      const table = yield* pg.query<{ id: number; body: string }>("SELECT id, body FROM items ORDER BY id")
      assert.deepStrictEqual(rows, new Map(table.map((r) => [r.id, r.body])))
      // read lines carry the epoch and the backfill; resumed, not restarted: far fewer than two full reads
      const readLines = lines.filter((l) => l.op === "read")
      assert.isTrue(readLines.every((l) => typeof l.epoch === "number" && l.snapshot?.startsWith("bf_")))
      assert.isBelow(reads(), 100000 + 20 * 2000)
      assert.isAbove(new Set(readLines.map((l) => l.epoch)).size, 1, "read lines of both owners")
    }))
})
