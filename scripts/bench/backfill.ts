/**
 * Backfill: `slotkeeper run --snapshot initial --sink file:` on a table of `BACKFILL_ROWS` (default 5M) existing rows,
 * against PostgreSQL's own fastest way out of a table, `COPY (SELECT ...) TO STDOUT` into /dev/null (psql), on the same
 * table and server — while a writer changes another table of the stream at 1,000 rows/s, whose lag is the stream's lag
 * during the backfill.
 *
 * - COPY: `psql -c "COPY (SELECT id, body, n, at FROM items) TO STDOUT" > /dev/null`, timed from spawning psql to its
 *   exit, after one unmeasured COPY that brings the table into the caches (both readers then read a warm table).
 * - The backfill: timed from spawning `slotkeeper run` (start-up, ownership and slot included) until the file holds
 *   every row as a `read` line; peak RSS is the process's `VmHWM`.
 * - Lag: the CLI's `slotkeeper_commit_to_sink_seconds` histogram between the backfill's start and end (every batch,
 *   the backfill's own included: a chunk is delivered inside its watermark's transaction, so a batch holding one is
 *   observed from that transaction's commit to the fsync of the chunk's last line).
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Fiber, Schedule } from "effect"
import { PgCluster } from "@slotkeeper/testkit"
import Pg from "pg"
import { freePort } from "../../packages/cli/test/cli-helpers.ts"
import { buckets, quantile } from "./lag.ts"
import { cell, table } from "./stats.ts"
import { Rows } from "../../packages/core/src/replication/Rows.ts"
import * as Ndjson from "../../packages/core/src/sink/Ndjson.ts"
import { cli, cliEnv, cliFlags, currentRss, lineCounter, peakRss, profiling } from "./throughput.ts"

export interface BackfillResult {
  readonly rows: number
  readonly copyMs: number
  /** Reading by key in 10,000-row chunks and rendering each row's line in this process, nothing written. */
  readonly ceilingMs: number
  readonly backfillMs: number
  readonly rssMB: number | undefined
  readonly rssSeries: ReadonlyArray<readonly [number, number]>
  /** Upper bucket bounds, seconds. */
  readonly lagP99: number
  readonly lagMax: number
  readonly writerRowsPerSecond: number
}

const psql = () => {
  try {
    return execFileSync("sh", ["-c", "command -v psql"]).toString().trim()
  } catch {
    return undefined
  }
}


/**
 * What a JavaScript reader can do at best on this machine: the backfill's own chunk query (10,000 rows by key, raw
 * texts), each row built (`Rows`) and rendered as its line (`Ndjson.line`) — in this process, nothing written, no
 * stream, no window.
 */
const ceiling = async (url: string) => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    const relation = {
      oid: 0,
      schema: "public",
      name: "items",
      replicaIdentity: "default" as const,
      columns: [["id", 20], ["body", 25], ["n", 23], ["at", 1184]].map(([name, typeOid], i) => ({ name: name as string, typeOid: typeOid as number, typeMod: -1, key: i === 0 }))
    }
    const rows = new Rows()
    const shape = rows.shape(relation)
    const raw = { getTypeParser: () => (v: string) => v }
    const started = performance.now()
    let after = "0"
    let seq = 0
    let bytes = 0
    for (;;) {
      const r = await client.query<Array<string>>({ text: "SELECT id, body, n, at FROM ONLY items WHERE (id) > ($1) ORDER BY id LIMIT 10000", values: [after], rowMode: "array", types: raw })
      if (r.rows.length === 0) break
      after = r.rows.at(-1)![0]!
      for (const texts of r.rows) {
        const line = Ndjson.line({
          _tag: "Change", op: "read", snapshot: "bf_bench", schema: "public", table: "items", xid: 1000, commitLsn: 1n, commitTime: "2026-12-04 00:00:00+00",
          seq: ++seq, new: rows.build(relation, texts).row, old: undefined, oldIsKey: false, unchanged: [], columns: shape.columns, plainJson: shape.plain && !shape.floats
        }, 1)!
        bytes += line.length
      }
    }
    if (bytes === 0) throw new Error("the ceiling read nothing")
    return performance.now() - started
  } finally {
    await client.end()
  }
}

const scrape = (port: number) => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text())

export const run = (rows: number, chunkSize?: number) =>
  Effect.scoped(Effect.gen(function*() {
    const copier = psql()
    if (copier === undefined) return yield* Effect.die(new Error("no psql on this machine (apt-get install postgresql-client)"))
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL, at timestamptz NOT NULL)")
    yield* pg.query("CREATE TABLE events (id bigint PRIMARY KEY, body text)")
    yield* pg.query(`INSERT INTO items SELECT g, md5(g::text), g % 1000, '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, ${rows}) g`)
    yield* pg.query("VACUUM ANALYZE items")
    yield* pg.query("CHECKPOINT")
    const select = "COPY (SELECT id, body, n, at FROM items) TO STDOUT"
    const copy = () => {
      const started = performance.now()
      execFileSync("sh", ["-c", `"$0" "$1" -X -q -c "$2" > /dev/null`, copier, pg.url, select])
      return performance.now() - started
    }
    copy() // warm
    const copyMs = copy()
    const ceilingMs = yield* Effect.promise(() => ceiling(pg.url))

    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-backfill-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const file = join(dir, "out.ndjson")
    const port = yield* Effect.promise(() => freePort())
    const count = lineCounter(file, (l) => l.includes("\"op\":\"read\""))

    // the writer: every 20 ms, one transaction of 20 rows into `events` (1,000 rows/s), for the whole run
    const writer = new Pg.Client({ connectionString: pg.url })
    yield* Effect.promise(() => writer.connect())
    yield* Effect.addFinalizer(() => Effect.promise(() => writer.end().catch(() => undefined)))
    let next = 1
    const tick = Effect.promise(async () => {
      await writer.query("INSERT INTO events SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g", [next, next + 19])
      next += 20
    })

    const env = cliEnv() // the first call builds the packages: before the clock starts
    const started = performance.now()
    const args = [...profiling, ...cliFlags(), cli, "run", "--database-url", pg.url, "--table", "items", "--table", "events", "--snapshot", "initial", "--sink", `file:${file}`, "--http-port", String(port), "--instance-id", "bench"]
    if (chunkSize !== undefined) args.push("--chunk-size", String(chunkSize))
    const child = spawn(process.execPath, args, { stdio: ["ignore", process.env.BENCH_STDOUT === undefined ? "ignore" : "inherit", "pipe"], env })
    let err = ""
    child.stderr.on("data", (d: Buffer) => (err += d.toString()))
    const closed = new Promise<number | null>((resolve) => child.once("close", resolve))
    yield* Effect.addFinalizer(() => Effect.promise(async () => {
      child.kill("SIGTERM")
      await closed
    }))
    const series: Array<readonly [number, number]> = []
    // until it streams: then the writer starts and the histogram's first reading is taken
    const wait = (ready: () => boolean, what: string) =>
      Effect.promise(() => new Promise<void>((resolve, reject) => {
        let polls = 0
        const poll = setInterval(() => {
          if (polls++ % 5 === 0) {
            const mb = currentRss(child.pid!)
            if (mb !== undefined) series.push([Math.round(performance.now() - started), mb])
          }
          if (process.env.BENCH_LOG !== undefined && polls % 5 === 0) process.stderr.write(`[bench] ${new Date().toISOString().slice(11, 23)} ${count()} rows, rss ${currentRss(child.pid!)}\n`)
          if (ready()) {
            if (process.env.BENCH_LOG !== undefined) process.stderr.write(`[bench] ${new Date().toISOString().slice(11, 23)} ready after ${Math.round(performance.now() - started)} ms\n`)
            clearInterval(poll)
            resolve()
          }
        }, 20)
        closed.then((code) => {
          clearInterval(poll)
          reject(new Error(`slotkeeper run exited with ${code} before ${what}: ${err.slice(-2000)}`))
        })
      }))
    yield* wait(() => /streaming from/.test(err), "it streamed")
    const writing = yield* Effect.forkScoped(Effect.repeat(tick, Schedule.fixed("20 millis")))
    const before = buckets(yield* Effect.promise(() => scrape(port)), "slotkeeper_commit_to_sink_seconds")
    const writerFrom = next
    const writerAt = performance.now()
    yield* wait(() => count() >= rows, `every row was read (${count()} of ${rows})`)
    const backfillMs = performance.now() - started
    if (process.env.BENCH_LOG !== undefined) process.stderr.write(`${err}\n[bench] all rows at ${Math.round(backfillMs)} ms\n`)
    const rssMB = peakRss(child.pid!)
    const after = buckets(yield* Effect.promise(() => scrape(port)), "slotkeeper_commit_to_sink_seconds")
    const writerRowsPerSecond = Math.round(((next - writerFrom) / (performance.now() - writerAt)) * 1000)
    yield* Fiber.interrupt(writing)
    const window = after.map(([le, c]) => [le, c - (before.find(([b]) => b === le)?.[1] ?? 0)] as const)
    return {
      rows,
      copyMs,
      ceilingMs,
      backfillMs,
      rssMB,
      rssSeries: series,
      lagP99: quantile(window, 0.99),
      lagMax: quantile(window, 1),
      writerRowsPerSecond
    } satisfies BackfillResult
  }))

export const report = (runs: number, rows: number, log: (text: string) => void) =>
  Effect.gen(function*() {
    const results: Array<BackfillResult> = []
    for (let i = 1; i <= runs; i++) {
      log(`backfill: ${rows.toLocaleString("en")} rows, run ${i} of ${runs}`)
      results.push(yield* run(rows, process.env.CHUNK_SIZE === undefined ? undefined : Number(process.env.CHUNK_SIZE)))
    }
    const rate = (ms: number) => rows / (ms / 1000)
    const ratios = results.map((r) => rate(r.backfillMs) / rate(r.copyMs))
    const s = (v: number) => (Number.isFinite(v) ? `≤ ${Math.round(v * 1000)} ms` : "> 60 s")
    const rss = results.flatMap((r) => (r.rssMB === undefined ? [] : [r.rssMB]))
    return {
      results,
      ratios,
      rss,
      text: `## Backfill\n\n\`slotkeeper run --snapshot initial --sink file:\` on a table of ${rows.toLocaleString("en")} rows (\`id bigint\` key, an md5 text, an int, a timestamptz), timed from spawning it until the file holds every row as a \`read\` line (start-up and ownership included), against \`COPY (SELECT id, body, n, at FROM items) TO STDOUT\` by psql into /dev/null on the same warm table, and against the ceiling of any reader in JavaScript: the same chunk queries (10,000 rows by key) with each row built and rendered as its line in the bench's own process, nothing written; meanwhile a writer inserts 1,000 rows/s (every 20 ms, 20 rows) into another table of the stream, and the lag is the CLI's \`slotkeeper_commit_to_sink_seconds\` histogram over the backfill (every batch, the chunks' own included). Median (min–max) of ${runs} runs.\n\n${
        table(["reader", "rows/s", "vs COPY", "peak RSS (MB)", "lag p99 / max during it"], [
          ["COPY ... TO STDOUT (psql, /dev/null)", cell(results.map((r) => rate(r.copyMs))), "1", "", ""],
          ["read by key and rendered, in-process, nothing written (a JavaScript reader's ceiling)", cell(results.map((r) => rate(r.ceilingMs))), cell(results.map((r) => r.copyMs / r.ceilingMs), 2), "", ""],
          ["slotkeeper run --snapshot initial --sink file:", cell(results.map((r) => rate(r.backfillMs))), cell(ratios, 2), cell(rss), results.map((r) => `${s(r.lagP99)} / ${s(r.lagMax)}`).join("; ")]
        ])
      }`
    }
  })
