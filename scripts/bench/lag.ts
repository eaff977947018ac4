/**
 * Lag: `slotkeeper run --sink file:` under a sustained insert load (default 5,000 rows/s: every 20 ms, ten
 * transactions of ten rows), for `LAG_SECONDS` (default 60) after a 5-second warm-up; then the CLI's own
 * `slotkeeper_commit_to_sink_seconds` histogram is read from `/metrics` (each batch observed at its oldest
 * transaction: from its commit on the server to the batch being fsynced in the file). The percentiles are the
 * histogram's bucket bounds: "p99 ≤ 0.1 s" means at least 99% of the observations fell in buckets up to 0.1 s.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Fiber, Schedule } from "effect"
import { PgCluster, Wait } from "@slotkeeper/testkit"
import Pg from "pg"
import { freePort } from "../../packages/cli/test/cli-helpers.ts"
import { cli } from "./throughput.ts"


export interface LagResult {
  readonly rowsPerSecond: number
  readonly seconds: number
  readonly observations: number
  /** Upper bucket bound holding each percentile, in seconds. */
  readonly p50: number
  readonly p99: number
  readonly max: number
}

/** Parses a Prometheus histogram's cumulative buckets for `name`: [upper bound, count] in order. */
export const buckets = (text: string, name: string): Array<readonly [number, number]> =>
  text.split("\n")
    .filter((l) => l.startsWith(`${name}_bucket{`))
    .map((l) => {
      const le = /le="([^"]+)"/.exec(l)?.[1] ?? "+Inf"
      return [le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le), Number(l.trim().split(/\s+/).at(-1))] as const
    })
    .sort((a, b) => a[0] - b[0])

export const quantile = (bs: ReadonlyArray<readonly [number, number]>, q: number) => {
  const total = bs.at(-1)?.[1] ?? 0
  return bs.find(([, count]) => count >= q * total)?.[0] ?? Number.NaN
}

const scrape = (port: number) => Effect.promise(() => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()))

export const run = (seconds: number, rowsPerSecond = 5_000) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id bigint PRIMARY KEY, body text)")
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-lag-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const port = yield* Effect.promise(() => freePort())
    const child = spawn(process.execPath, [cli, "run", "--database-url", pg.url, "--table", "items", "--sink", `file:${join(dir, "out.ndjson")}`, "--http-port", String(port)], {
      stdio: ["ignore", "ignore", "pipe"]
    })
    let err = ""
    child.stderr.on("data", (d: Buffer) => (err += d.toString()))
    yield* Effect.addFinalizer(() => Effect.promise(() => new Promise<void>((resolve) => {
      child.once("close", () => resolve())
      child.kill("SIGTERM")
    })))
    yield* Wait.eventually(Effect.sync(() => (/streaming from/.test(err) ? true : undefined)), 60_000, "slotkeeper streaming")
    // every 20 ms, ten one-statement transactions of rowsPerSecond / 500 rows each, over five sessions (committed
    // as an application does: synchronously — an asynchronous commit reaches the walsender only when the WAL writer
    // flushes it, up to wal_writer_delay later, which would be measured as lag)
    const clients = Array.from({ length: 5 }, () => new Pg.Client({ connectionString: pg.url }))
    for (const c of clients) {
      yield* Effect.promise(() => c.connect())
      yield* Effect.addFinalizer(() => Effect.promise(() => c.end().catch(() => undefined)))
    }
    const perTransaction = Math.max(1, Math.round(rowsPerSecond / 500))
    let next = 1
    const tick = Effect.promise(async () => {
      const sent: Array<Promise<unknown>> = []
      for (let i = 0; i < 10; i++) {
        sent.push(clients[i % clients.length]!.query("INSERT INTO items SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g", [next, next + perTransaction - 1]))
        next += perTransaction
      }
      await Promise.all(sent)
    })
    // at fixed times (a slow tick is caught up by the next, not skipped)
    const writer = yield* Effect.forkScoped(Effect.repeat(tick, Schedule.fixed("20 millis")))
    yield* Effect.sleep("5 seconds")
    const before = buckets(yield* scrape(port), "slotkeeper_commit_to_sink_seconds")
    const startedAt = Date.now()
    const rowsBefore = next
    yield* Effect.sleep(`${seconds} seconds`)
    const after = buckets(yield* scrape(port), "slotkeeper_commit_to_sink_seconds")
    const rate = ((next - rowsBefore) / (Date.now() - startedAt)) * 1000
    yield* Fiber.interrupt(writer)
    // the measured window only: the difference of the cumulative counts
    const window = after.map(([le, count]) => [le, count - (before.find(([b]) => b === le)?.[1] ?? 0)] as const)
    return {
      rowsPerSecond: Math.round(rate),
      seconds,
      observations: window.at(-1)?.[1] ?? 0,
      p50: quantile(window, 0.5),
      p99: quantile(window, 0.99),
      max: quantile(window, 1)
    } satisfies LagResult
  }))

export const report = (seconds: number, log: (text: string) => void) =>
  Effect.gen(function*() {
    log(`lag: ${seconds} s at 5,000 rows/s`)
    const r = yield* run(seconds)
    const s = (v: number) => (Number.isFinite(v) ? `≤ ${v * 1000} ms` : "> 60 s")
    return {
      result: r,
      text: `## Lag under load\n\n\`slotkeeper run --sink file:\` while 5,000 rows/s are inserted (every 20 ms, ten transactions of ten rows over five sessions, committed synchronously; measured: ${r.rowsPerSecond.toLocaleString("en")} rows/s) for ${r.seconds} s after a 5 s warm-up. From the CLI's own \`slotkeeper_commit_to_sink_seconds\` histogram (each fsynced batch observed at its oldest transaction: commit on the server → durable in the file), ${r.observations.toLocaleString("en")} batches; a percentile is the upper bound of the bucket that holds it.\n\n| p50 | p99 | max |\n|---|---|---|\n| ${s(r.p50)} | ${s(r.p99)} | ${s(r.max)} |`
    }
  })
