/**
 * Liveness under load: what the ownership timings must tolerate on this machine. For `LOAD_SECONDS` (default 600) the
 * workloads W1–W3 (1M rows in 100 transactions, one 1M-row transaction, 100k one-row transactions) are written in a
 * loop while `slotkeeper run` (file sink) streams them with the timings under test; meanwhile a probe session runs a
 * trivial query every 100 ms, as a lock heartbeat does, and its round trips are recorded.
 *
 * Reported: the probe's latency percentiles (what a heartbeat waits under this load), and the instance's ownership
 * losses (any is spurious: nothing else happens to it). The defaults are chosen from this (see OwnershipConfig).
 *
 *   npm run bench -- load                                   # defaults, both lock modes, 10 minutes each
 *   LOAD_SECONDS=120 MODES=advisory npm run bench -- load        # shorter
 *   ARGS="--heartbeat-interval 500ms --loss-deadline 2s --server-release-bound 4s" npm run bench -- load
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Fiber } from "effect"
import { PgCluster } from "@slotkeeper/testkit"
import Pg from "pg"
import { cli, workloads } from "./throughput.ts"



export interface LoadResult {
  readonly mode: string
  readonly args: string
  readonly seconds: number
  readonly rowsWritten: number
  readonly probes: number
  readonly p50: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly losses: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN

/** One mode under load for `seconds`, with the instance's extra `args` (timing flags). */
export const run = (mode: "advisory" | "lease", seconds: number, args: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-load-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    let stderr = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const c = spawn(process.execPath, [cli, "run", "--database-url", pg.url, "--table", "items", "--lock", mode, "--sink", `file:${join(dir, "out.ndjson")}`, ...args], {
          stdio: ["ignore", "ignore", "pipe"]
        })
        c.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
        return c
      }),
      (c) => Effect.promise(() => new Promise<void>((resolve) => (c.exitCode !== null ? resolve() : (c.once("close", () => resolve()), c.kill("SIGTERM")))))
    )
    for (let i = 0; !/streaming from/.test(stderr); i++) {
      if (child.exitCode !== null || i > 600) return yield* Effect.fail(new Error(`slotkeeper run did not start streaming: ${stderr.slice(-2000)}`))
      yield* Effect.sleep("100 millis")
    }
    // the probe: a session of its own (as the lock session is), a trivial query every 100 ms
    const client = yield* Effect.acquireRelease(
      Effect.promise(async () => {
        const c = new Pg.Client({ connectionString: pg.url })
        c.on("error", () => {})
        await c.connect()
        return c
      }),
      (c) => Effect.promise(() => c.end().catch(() => undefined))
    )
    const latencies: Array<number> = []
    const probe = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const t = performance.now()
      yield* Effect.promise(() => client.query("SELECT 1").catch(() => undefined))
      latencies.push(performance.now() - t)
      yield* Effect.sleep("100 millis")
    })))
    const started = Date.now()
    let rowsWritten = 0
    const ws = workloads(1_000_000, 100_000).slice(0, 3) // W1–W3
    for (let i = 0; Date.now() - started < seconds * 1000; i++) {
      const w = ws[i % ws.length]!
      yield* pg.query("TRUNCATE items")
      yield* pg.query(w.sql)
      rowsWritten += w.rows
    }
    yield* Fiber.interrupt(probe)
    const sorted = [...latencies].sort((a, b) => a - b)
    return {
      mode,
      args: args.join(" ") || "(defaults)",
      seconds: Math.round((Date.now() - started) / 1000),
      rowsWritten,
      probes: sorted.length,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      max: sorted.at(-1) ?? Number.NaN,
      losses: [...stderr.matchAll(/ownership of stream \S+ lost/g)].length
    } satisfies LoadResult
  }))

/** The rows of the report's table. */
export const tableRows = (results: ReadonlyArray<LoadResult>) =>
  results.map((r) => [r.mode, r.args, String(r.seconds), r.rowsWritten.toLocaleString("en"), String(r.probes), r.p50.toFixed(1), r.p99.toFixed(1), r.p999.toFixed(1), r.max.toFixed(0), String(r.losses)])

export const tableHeader = ["lock", "timing flags", "seconds", "rows written", "probes", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "ownership losses"]
