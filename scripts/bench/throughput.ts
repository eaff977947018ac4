/**
 * Throughput and memory: one workload written once, then read by each reader alone, in a process of its own, from
 * its own copy of the slot (all made before the workload, so each starts at the same position):
 *
 * - `pg_recvlogical` writing pgoutput (protocol 2, streaming) to /dev/null: the server's decode rate, the practical
 *   ceiling. From SLOTKEEPER_PG_RECVLOGICAL or a Debian PostgreSQL client install; skipped, with a note, without one.
 * - a raw `pg-logical-replication` loop that only counts messages (protocol 1, what the library supports);
 * - the `@slotkeeper/core` stream (`Delivery`), consumed in-process, acknowledging every commit;
 * - `slotkeeper run --sink file:...`: the CLI, NDJSON to a file, fsynced before each acknowledgement.
 *
 * Each reader is timed from spawning its process until it has everything (its exit; for the CLI, the last change line
 * in the file): start-up included. Peak RSS: `/usr/bin/time` for pg_recvlogical, the process's own `maxRSS` for the
 * node readers, `VmHWM` for the CLI.
 *
 * `PROFILE_DIR=/tmp/prof` runs the node readers and the CLI with `--cpu-prof` into that folder (then
 * `node scripts/bench/profile-summary.ts FILE.cpuprofile` says where the time went).
 */
import { execFileSync, spawn } from "node:child_process"
import { createServer, type Server } from "node:http"
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { PgCluster } from "@slotkeeper/testkit"

const here = dirname(fileURLToPath(import.meta.url))
export const profiling = process.env.PROFILE_DIR === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", process.env.PROFILE_DIR]
/**
 * The CLI as users install it: the built packages (`dist/`, plain JavaScript), not the TypeScript sources the
 * workspace runs through Node's type stripping (which adds start-up time and tens of MB). Built once per bench run.
 */
let built = false
export const cliEnv = () => {
  if (!built) {
    execFileSync(process.execPath, [join(here, "..", "toolchain.mjs"), "build"], { stdio: ["ignore", "ignore", "inherit"] })
    built = true
  }
  return { ...process.env, NODE_OPTIONS: (process.env.NODE_OPTIONS ?? "").split(/\s+/).filter((o) => o !== "--conditions=source").join(" ") }
}
// node flags for the CLI only, to compare settings (e.g. CLI_NODE_FLAGS="--max-semi-space-size=8")
export const cliFlags = () => (process.env.CLI_NODE_FLAGS ?? "").split(" ").filter((f) => f.length > 0)
/** The `slotkeeper` binary. */
export const cli = join(here, "..", "..", "packages", "cli", "bin", "slotkeeper.js")

export const recvlogical = (() => {
  if (process.env.SLOTKEEPER_PG_RECVLOGICAL) return process.env.SLOTKEEPER_PG_RECVLOGICAL
  const base = "/usr/lib/postgresql"
  if (!existsSync(base)) return undefined
  return readdirSync(base).map((v) => join(base, v, "bin", "pg_recvlogical")).filter(existsSync).sort().at(-1)
})()

export const recvlogicalVersion = () => (recvlogical === undefined ? undefined : execFileSync(recvlogical, ["--version"]).toString().trim())

export interface Workload {
  readonly name: string
  readonly sql: string
  readonly rows: number
  /** All of it is one transaction (delivered only once its commit has been received). */
  readonly oneTransaction?: boolean
}

export const workloads = (rows: number, transactions: number): ReadonlyArray<Workload> => [
  {
    name: `${rows.toLocaleString("en")} rows in 100 transactions`,
    sql: `DO $$ BEGIN FOR t IN 0..99 LOOP INSERT INTO items SELECT g, md5(g::text) FROM generate_series(t * ${rows / 100} + 1, (t + 1) * ${rows / 100}) g; COMMIT; END LOOP; END $$`,
    rows
  },
  { name: `${rows.toLocaleString("en")} rows in one transaction`, sql: `INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`, rows, oneTransaction: true },
  {
    name: `${transactions.toLocaleString("en")} one-row transactions`,
    sql: `DO $$ BEGIN FOR i IN 1..${transactions} LOOP INSERT INTO items VALUES (i, md5(i::text)); COMMIT; END LOOP; END $$`,
    rows: transactions
  },
  // W4: values PostgreSQL stores out of line (TOAST): 8 kB of md5 hex per row, which pglz does not compress
  toasted(transactions, 8)
]

export const readers = [
  "pg_recvlogical (protocol 2, streaming)",
  "raw pg-logical-replication loop",
  "@slotkeeper/core Delivery, in-process",
  "slotkeeper run --sink file:",
  "slotkeeper run --sink http: (local receiver)"
] as const
export type Reader = typeof readers[number]

export interface Measured {
  readonly rows: number
  readonly ms: number
  readonly rssMB: number | undefined
  /** The in-process reader: when its first change came, ms from its start (a one-transaction workload: its commit). */
  readonly firstChangeMs?: number | undefined
  /** The CLI's resident memory over time: [ms since spawn, MB], every 100 ms. */
  readonly rssSeries?: ReadonlyArray<readonly [number, number]>
}

const nodeReader = (mode: "raw" | "slotkeeper" | "setup", url: string, end: string) =>
  Effect.promise(() =>
    new Promise<Measured>((resolve, reject) => {
      const started = performance.now()
      const child = spawn(process.execPath, [...(mode === "setup" ? [] : profiling), join(here, "reader.ts"), mode, url, end], { stdio: ["ignore", "pipe", "inherit"] })
      let out = ""
      child.stdout.on("data", (d: Buffer) => (out += d.toString()))
      child.on("close", (code) => {
        const line = out.split("\n").find((l) => l.startsWith("{"))
        if (code !== 0 || (line === undefined && mode !== "setup")) return reject(new Error(`${mode} reader exited with ${code}: ${out}`))
        const r = line === undefined ? { rows: 0, maxRssMB: undefined } : (JSON.parse(line) as { rows: number; maxRssMB: number; firstChangeMs?: number })
        resolve({ rows: r.rows, ms: performance.now() - started, rssMB: r.maxRssMB, firstChangeMs: "firstChangeMs" in r ? r.firstChangeMs : undefined })
      })
    })
  )

const recvlogicalReader = (url: string, end: string, rows: number, slot = "bench_recv") =>
  Effect.promise(() =>
    new Promise<Measured>((resolve, reject) => {
      const u = new URL(url)
      const started = performance.now()
      const args = ["-d", u.pathname.slice(1), "-h", u.hostname, "-p", u.port, "-U", decodeURIComponent(u.username), "-S", slot, "--start",
        "-o", "proto_version=2", "-o", "publication_names=bench", "-o", "streaming=on", "-E", end, "-f", "/dev/null", "--no-loop"]
      const child = spawn("/usr/bin/time", ["-f", "%M", recvlogical!, ...args], { stdio: ["ignore", "ignore", "pipe"] })
      let err = ""
      child.stderr.on("data", (d: Buffer) => (err += d.toString()))
      child.on("close", (code) => {
        const kb = Number(err.trim().split("\n").at(-1))
        if (code !== 0) reject(new Error(`pg_recvlogical exited with ${code}: ${err}`))
        else resolve({ rows, ms: performance.now() - started, rssMB: Number.isFinite(kb) ? Math.round(kb / 1024) : undefined })
      })
    })
  )

/**
 * Counts the lines appended to `path` since the last call that `matches` (default: change lines), incrementally: the
 * file can be hundreds of MB.
 */
export const lineCounter = (path: string, matches: (line: string) => boolean = (l) => l.startsWith("{\"type\":\"change\"")) => {
  let offset = 0
  let changes = 0
  let partial = ""
  const buffer = Buffer.alloc(1 << 20)
  return () => {
    if (!existsSync(path)) return 0
    const fd = openSync(path, "r")
    try {
      for (;;) {
        const n = readSync(fd, buffer, 0, buffer.length, offset)
        if (n === 0) break
        offset += n
        const text = partial + buffer.toString("utf8", 0, n)
        const lines = text.split("\n")
        partial = lines.pop()!
        for (const l of lines) if (matches(l)) changes++
      }
    } finally {
      closeSync(fd)
    }
    return changes
  }
}

/** A memory figure of `pid` from /proc (`VmRSS`: now, `VmHWM`: its peak), in MB. */
const statusMB = (pid: number, field: "VmRSS" | "VmHWM") => {
  try {
    const kb = Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1])
    return Number.isFinite(kb) ? Math.round(kb / 1024) : undefined
  } catch {
    return undefined
  }
}
export const currentRss = (pid: number) => statusMB(pid, "VmRSS")
export const peakRss = (pid: number) => statusMB(pid, "VmHWM")

/** A local NDJSON receiver for the http sink: answers 200 to every batch once its body arrived, counting change lines. */
const receiver = () =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ readonly port: number; readonly changes: () => number; readonly server: Server }>((resolve) => {
        let changes = 0
        const server = createServer((req, res) => {
          let tail = ""
          req.on("data", (d: Buffer) => {
            const text = tail + d.toString("latin1") // counting ASCII markers: no decoding needed
            let at = text.indexOf("{\"type\":\"change\"")
            while (at >= 0) {
              if (at === 0 ? tail === "" || tail.endsWith("\n") : text[at - 1] === "\n") changes++
              at = text.indexOf("{\"type\":\"change\"", at + 1)
            }
            tail = text.slice(-20)
          })
          req.on("end", () => res.writeHead(200).end())
        })
        server.listen(0, "127.0.0.1", () => resolve({ port: (server.address() as { port: number }).port, changes: () => changes, server }))
      })),
    (r) => Effect.promise(() => new Promise<void>((resolve) => r.server.close(() => resolve())))
  )

/**
 * `slotkeeper run` on stream `streamId` with `sink` until `count()` reaches `rows` (or, with `rows` 0, until it
 * streams).
 */
const cliReader = (url: string, streamId: string, sink: string, rows: number, count: () => number) =>
  Effect.promise(() =>
    new Promise<Measured>((resolve, reject) => {
      const started = performance.now()
      const child = spawn(process.execPath, [...(rows === 0 ? [] : profiling), ...cliFlags(), cli, "run", "--database-url", url, "--stream-id", streamId, "--table", "items", "--sink", sink, "--instance-id", "bench"], {
        stdio: ["ignore", "ignore", "pipe"],
        env: cliEnv()
      })
      let err = ""
      child.stderr.on("data", (d: Buffer) => (err += d.toString()))
      let result: Measured | undefined
      const series: Array<readonly [number, number]> = []
      let polls = 0
      const poll = setInterval(() => {
        if (polls++ % 5 === 0) {
          const mb = currentRss(child.pid!)
          if (mb !== undefined) series.push([Math.round(performance.now() - started), mb])
        }
        const ready = rows === 0 ? /streaming from/.test(err) : count() >= rows
        if (!ready) return
        clearInterval(poll)
        result = { rows: rows === 0 ? 0 : count(), ms: performance.now() - started, rssMB: peakRss(child.pid!), rssSeries: series }
        child.kill("SIGTERM")
      }, 20)
      child.on("close", (code) => {
        clearInterval(poll)
        if (result === undefined || code !== 0) reject(new Error(`slotkeeper run exited with ${code} before it had ${rows} rows: ${err.slice(-2000)}`))
        else resolve(result)
      })
    })
  )

/** Time from spawning `slotkeeper run` until it logs that it owns the stream (a warm server, the stream set up). */
export const timeToOwnership = (url: string, path: string) =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const started = performance.now()
      const child = spawn(process.execPath, [cli, "run", "--database-url", url, "--stream-id", "cli", "--table", "items", "--sink", `file:${path}`, "--instance-id", "bench"], {
        stdio: ["ignore", "ignore", "pipe"],
        env: cliEnv()
      })
      let err = ""
      let at: number | undefined
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString()
        if (at === undefined && /ownership of stream cli acquired/.test(err)) {
          at = performance.now() - started
          child.kill("SIGTERM")
        }
      })
      child.on("close", () => (at === undefined ? reject(new Error(`no ownership: ${err.slice(-2000)}`)) : resolve(at)))
    })
  )

/** A one-transaction workload of `rows` rows of `kB` kB of incompressible text each (the memory part's 1 GB). */
export function toasted(rows: number, kB: number): Workload {
  return {
    name: `${rows.toLocaleString("en")} rows of ${kB} kB TOASTed text in one transaction`,
    sql: `INSERT INTO items SELECT g, (SELECT string_agg(md5(g::text || ':' || i::text), '') FROM generate_series(1, ${kB * 32}) i) FROM generate_series(1, ${rows}) g`,
    rows,
    oneTransaction: true
  }
}

/**
 * One run of `workload`: a fresh server, every reader's slot made, the workload written, then each reader alone —
 * after an unmeasured warm-up read (pg_recvlogical on a slot of its own, its rate logged), so that no reader pays
 * alone for what the first read after a workload costs (pg_recvlogical, when it was first, varied 7.0–9.4k rows/s on
 * W4).
 */
export const run = (workload: Workload, only?: ReadonlyArray<Reader>) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    yield* pg.query("CREATE PUBLICATION bench FOR TABLE items")
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-bench-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const file = join(dir, "changes.ndjson")
    // every reader's slot before the workload: the core's and the CLI's own streams, and copies for the others
    yield* nodeReader("setup", pg.url, "0/0")
    yield* cliReader(pg.url, "cli", `file:${file}`, 0, () => 0)
    rmSync(file, { force: true })
    const http = yield* receiver()
    yield* cliReader(pg.url, "http", `http://127.0.0.1:${http.port}/`, 0, () => 0)
    yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('bench_raw', 'pgoutput')")
    yield* pg.query("SELECT slot_name FROM pg_copy_logical_replication_slot('bench_raw', 'bench_recv')")
    yield* pg.query("SELECT slot_name FROM pg_copy_logical_replication_slot('bench_raw', 'bench_warm')")
    const written = performance.now()
    yield* pg.query(workload.sql)
    const writeMs = performance.now() - written
    const [row] = yield* pg.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")
    const end = row!.lsn
    // the workload's dirty pages written out now, not while the first reader runs (after `end` is read: the readers
    // wait for a commit at or past it, and the checkpoint's own record is none)
    yield* pg.query("CHECKPOINT")
    if (recvlogical !== undefined && existsSync("/usr/bin/time")) {
      const warm = yield* recvlogicalReader(pg.url, end, workload.rows, "bench_warm")
      console.error(`[bench] warm-up read (pg_recvlogical): ${Math.round(warm.rows / (warm.ms / 1000))} rows/s`)
    }
    yield* pg.query("SELECT pg_drop_replication_slot('bench_warm')")
    const results = new Map<Reader, Measured | string>()
    const wanted = (reader: Reader) => only === undefined || only.includes(reader)
    if (wanted(readers[0])) {
      results.set(readers[0], recvlogical !== undefined && existsSync("/usr/bin/time")
        ? yield* recvlogicalReader(pg.url, end, workload.rows)
        : "skipped: no pg_recvlogical on this machine (set SLOTKEEPER_PG_RECVLOGICAL)")
    }
    if (wanted(readers[1])) results.set(readers[1], yield* nodeReader("raw", pg.url, end))
    if (wanted(readers[2])) results.set(readers[2], yield* nodeReader("slotkeeper", pg.url, end))
    if (wanted(readers[3])) results.set(readers[3], yield* cliReader(pg.url, "cli", `file:${file}`, workload.rows, lineCounter(file)))
    if (wanted(readers[4])) results.set(readers[4], yield* cliReader(pg.url, "http", `http://127.0.0.1:${http.port}/`, workload.rows, http.changes))
    const fileMB = existsSync(file) ? Math.round(statSync(file).size / 2 ** 20) : 0
    // a warm server, the stream set up: how long until a new process owns it
    const ownershipMs = yield* timeToOwnership(pg.url, file)
    return { results, writeMs, fileMB, ownershipMs, version: pg.version }
  }))
