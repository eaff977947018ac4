/**
 * Stream throughput and memory: the same workload read by `pg_recvlogical` (the server's decode rate, the practical
 * ceiling), a raw pg-logical-replication loop that only counts messages, and the @slotkeeper/core stream consumed
 * in-process. Each reader has its own copy of the slot and runs alone, in its own process.
 *
 *   npm run bench:stream                 # 1,000,000 rows in one transaction, and 100,000 one-row transactions
 *   ROWS=200000 npm run bench:stream
 *
 * Prints rows/s (wall time from spawning each reader's process to its exit, start-up included), each reader's ratio to
 * pg_recvlogical with protocol 2 streaming (the server's decode rate), and peak RSS. pg_recvlogical comes from SLOTKEEPER_PG_RECVLOGICAL
 * or a Debian PostgreSQL client install; without it that reader is skipped, with a note.
 */
import { execFileSync, spawn } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { cpus } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { PgCluster } from "@slotkeeper/testkit"

const here = dirname(fileURLToPath(import.meta.url))
const rows = Number(process.env.ROWS ?? 1_000_000)
const smallTransactions = Number(process.env.TRANSACTIONS ?? 100_000)

const recvlogical = (() => {
  if (process.env.SLOTKEEPER_PG_RECVLOGICAL) return process.env.SLOTKEEPER_PG_RECVLOGICAL
  const base = "/usr/lib/postgresql"
  if (!existsSync(base)) return undefined
  const found = readdirSync(base).map((v) => join(base, v, "bin", "pg_recvlogical")).filter(existsSync).sort()
  return found.at(-1)
})()

interface Result { readonly rows: number; readonly ms: number; readonly maxRssMB: number | undefined; readonly heapUsedMB?: number; readonly externalMB?: number }

const runReader = (mode: string, url: string, end: string) =>
  Effect.promise(() =>
    new Promise<Result>((resolve, reject) => {
      const started = performance.now() // every reader is timed the same way: from spawning its process to its exit
      const child = spawn(process.execPath, [join(here, "bench-stream-reader.ts"), mode, url, end], { stdio: ["ignore", "pipe", "inherit"] })
      let out = ""
      child.stdout.on("data", (d: Buffer) => (out += d.toString()))
      child.on("exit", (code) => {
        const line = out.split("\n").find((l) => l.startsWith("{"))
        if (code !== 0 || line === undefined) reject(new Error(`${mode} reader exited with ${code}: ${out}`))
        else resolve({ ...(JSON.parse(line) as Omit<Result, "ms">), ms: Math.round(performance.now() - started) })
      })
    })
  )

const runRecvlogical = (slot: string, protocol: 1 | 2, url: string, end: string, expected: number) =>
  Effect.promise(() =>
    new Promise<Result>((resolve, reject) => {
      const u = new URL(url)
      const started = performance.now()
      const args = ["-d", u.pathname.slice(1), "-h", u.hostname, "-p", u.port, "-U", decodeURIComponent(u.username), "-S", slot, "--start",
        "-o", `proto_version=${protocol}`, "-o", "publication_names=bench", ...(protocol === 2 ? ["-o", "streaming=on"] : []), "-E", end, "-f", "/dev/null", "--no-loop"]
      const child = spawn("/usr/bin/time", ["-f", "%M", recvlogical!, ...args], { stdio: ["ignore", "ignore", "pipe"] })
      let err = ""
      child.stderr.on("data", (d: Buffer) => (err += d.toString()))
      child.on("exit", (code) => {
        const kb = Number(err.trim().split("\n").at(-1))
        if (code !== 0) reject(new Error(`pg_recvlogical exited with ${code}: ${err}`))
        else resolve({ rows: expected, ms: Math.round(performance.now() - started), maxRssMB: Number.isFinite(kb) ? Math.round(kb / 1024) : undefined })
      })
    })
  )

const workload = (name: string, write: string, expected: number) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    yield* pg.query("CREATE PUBLICATION bench FOR TABLE items")
    yield* runReaderSetup(pg.url)
    yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('bench_raw', 'pgoutput')")
    yield* pg.query("SELECT slot_name FROM pg_copy_logical_replication_slot('bench_raw', 'bench_recv1')")
    yield* pg.query("SELECT slot_name FROM pg_copy_logical_replication_slot('bench_raw', 'bench_recv2')")
    const started = performance.now()
    yield* pg.query(write)
    const writeMs = performance.now() - started
    const [row] = yield* pg.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")
    const end = row!.lsn
    const results: Array<[string, Result | string]> = []
    if (recvlogical !== undefined && existsSync("/usr/bin/time")) {
      results.push(["pg_recvlogical, protocol 2 with streaming (the ceiling)", yield* runRecvlogical("bench_recv2", 2, pg.url, end, expected)])
      results.push(["pg_recvlogical, protocol 1", yield* runRecvlogical("bench_recv1", 1, pg.url, end, expected)])
    } else results.push(["pg_recvlogical", "skipped: no pg_recvlogical on this machine (set SLOTKEEPER_PG_RECVLOGICAL)"])
    results.push(["raw pg-logical-replication loop (protocol 1)", yield* runReader("raw", pg.url, end)])
    results.push(["@slotkeeper/core Delivery (protocol 2, streamed)", yield* runReader("slotkeeper", pg.url, end)])
    const ceiling = results[0]![1]
    console.log(`\n### ${name} (written in ${(writeMs / 1000).toFixed(1)} s)\n`)
    console.log("| reader | rows | seconds | rows/s | vs the ceiling | peak RSS | peak heap used / external |")
    console.log("|---|---:|---:|---:|---:|---:|---:|")
    for (const [reader, r] of results) {
      if (typeof r === "string") {
        console.log(`| ${reader} | | | | | ${r} | |`)
        continue
      }
      const rate = r.rows / (r.ms / 1000)
      const ratio = typeof ceiling === "string" ? "" : (rate / (ceiling.rows / (ceiling.ms / 1000))).toFixed(2)
      const heap = r.heapUsedMB === undefined ? "" : `${r.heapUsedMB} / ${r.externalMB} MB`
      console.log(`| ${reader} | ${r.rows.toLocaleString("en")} | ${(r.ms / 1000).toFixed(1)} | ${Math.round(rate).toLocaleString("en")} | ${ratio} | ${r.maxRssMB ?? "?"} MB | ${heap} |`)
    }
  }))

const runReaderSetup = (url: string) => Effect.asVoid(runReader("setup", url, "0/0").pipe(Effect.catchDefect(() => Effect.void)))

const program = Effect.gen(function*() {
  console.log(`PostgreSQL 18, ${cpus().length} cores, node ${process.version}${recvlogical ? `, ${execFileSync(recvlogical, ["--version"]).toString().trim()}` : ""}`)
  yield* workload(`${rows.toLocaleString("en")} rows in one transaction`, `INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`, rows)
  yield* workload(`${smallTransactions.toLocaleString("en")} one-row transactions`,
    `DO $$ BEGIN FOR i IN 1..${smallTransactions} LOOP INSERT INTO items VALUES (i, md5(i::text)); COMMIT; END LOOP; END $$`, smallTransactions)
})

await Effect.runPromise(program)
