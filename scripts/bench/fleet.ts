/**
 * Fleet: what an idle stream costs a runner. One `slotkeeper fleet` runner with no stream, then with `FLEET_STREAMS`
 * (default 100) idle streams (each its own table in one database, the file sink): once every stream streams, RSS is
 * sampled (the server allows 2 slots and a walsender per stream: the persistent slot and its temporary clone), CPU is measured over `FLEET_IDLE_SECONDS` (default 30) of idleness (utime + stime from /proc), and the
 * server's sessions are counted by role (from each session's `application_name`, `slotkeeper:<stream>:<instance>:<role>`).
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { PgCluster, Wait } from "@slotkeeper/testkit"
import { freePort } from "../../packages/cli/test/cli-helpers.ts"
import { cli, cliEnv, currentRss } from "./throughput.ts"

export interface FleetIdle {
  readonly streams: number
  readonly baseRssMB: number
  readonly rssMB: number
  readonly perStreamMB: number
  readonly cpuPercent: number
  readonly startSeconds: number
  readonly sessionsPerStream: Record<string, number>
}

const ticks = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return Number(fields[11]) + Number(fields[12]) // utime + stime, in clock ticks (100 per second)
}

export const idle = (count: number, idleSeconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18, settings: { max_connections: Math.max(100, count * 5 + 50), max_replication_slots: count * 2 + 10, max_wal_senders: count + 10 } })
    for (let i = 1; i <= count; i++) yield* pg.query(`CREATE TABLE t${i} (id int PRIMARY KEY, body text)`)
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-fleet-bench-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const file = join(dir, "fleet.json")
    const write = (n: number) =>
      writeFileSync(file, JSON.stringify({
        control: { databaseUrl: pg.url },
        streams: Array.from({ length: Math.max(n, 1) }, (_, i) => ({ id: `s${i + 1}`, databaseUrl: pg.url, tables: [`public.t${i + 1}`], sink: `file:${join(dir, `s${i + 1}.ndjson`)}` })).slice(0, n === 0 ? 0 : n)
      }))
    // a runner needs at least one stream in its file: the base is measured with one, and the per-stream figure over the rest
    write(1)
    const env = cliEnv()
    const [port, http] = [yield* Effect.promise(() => freePort()), yield* Effect.promise(() => freePort())]
    const child = spawn(process.execPath, [cli, "fleet", "--config", file, "--instance-id", "bench", "--runner-host", "127.0.0.1", "--runner-port", String(port), "--http-port", String(http)], { stdio: ["ignore", "ignore", "pipe"], env })
    let err = ""
    child.stderr.on("data", (d: Buffer) => (err += d.toString()))
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()))
    yield* Effect.addFinalizer(() => Effect.promise(async () => {
      child.kill("SIGTERM")
      await closed
    }))
    const streamingCount = Effect.map(pg.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name LIKE 'slotkeeper:%'"), (r) => r[0]!.n)
    yield* Wait.eventually(Effect.map(streamingCount, (n) => (n >= 1 ? true : undefined)), 120_000, `the first stream streaming: ${err.slice(-1000)}`)
    yield* Effect.sleep("5 seconds")
    const baseRssMB = currentRss(child.pid!) ?? Number.NaN
    const started = performance.now()
    write(count)
    yield* Wait.eventually(Effect.map(streamingCount, (n) => (n >= count ? true : undefined)), Number(process.env.FLEET_START_TIMEOUT_MS ?? 300_000), `${count} streams streaming`).pipe(
      // what the runner said, for a start that did not finish
      Effect.onExit(() => Effect.sync(() => writeFileSync(join(tmpdir(), "slotkeeper-fleet-bench.log"), err)))
    )
    const startSeconds = (performance.now() - started) / 1000
    yield* Effect.sleep("10 seconds") // settled: start-up's garbage collected
    const rssMB = currentRss(child.pid!) ?? Number.NaN
    const before = ticks(child.pid!)
    yield* Effect.sleep(`${idleSeconds} seconds`)
    const cpuPercent = ((ticks(child.pid!) - before) / 100 / idleSeconds) * 100
    const sessions = yield* pg.query<{ role: string; n: number }>(
      "SELECT split_part(application_name, ':', 4) AS role, count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'slotkeeper:s%' GROUP BY 1 ORDER BY 1"
    )
    return {
      streams: count,
      baseRssMB,
      rssMB,
      perStreamMB: (rssMB - baseRssMB) / (count - 1),
      cpuPercent,
      startSeconds,
      sessionsPerStream: Object.fromEntries(sessions.map((s) => [s.role === "" ? "(other)" : s.role, Math.round((s.n / count) * 100) / 100]))
    } satisfies FleetIdle
  }))

export const report = (log: (text: string) => void) =>
  Effect.gen(function*() {
    const count = Number(process.env.FLEET_STREAMS ?? 100)
    const seconds = Number(process.env.FLEET_IDLE_SECONDS ?? 30)
    log(`fleet: ${count} idle streams on one runner, ${seconds} s idle`)
    const r = yield* idle(count, seconds)
    return {
      result: r,
      text: `## Fleet: idle streams\n\nOne \`slotkeeper fleet\` runner: with one stream, then with ${r.streams} idle streams (one table each, in one database, the file sink), added to its file while it runs. All ${r.streams} streaming ${r.startSeconds.toFixed(1)} s after the file changed.\n\n| RSS, one stream | RSS, ${r.streams} streams | per stream | CPU while idle (${seconds} s) | sessions per stream, by role |\n|---|---|---|---|---|\n| ${r.baseRssMB} MB | ${r.rssMB} MB | ${r.perStreamMB.toFixed(2)} MB | ${r.cpuPercent.toFixed(1)}% of a core | ${Object.entries(r.sessionsPerStream).map(([role, n]) => `${role} ${n}`).join(", ")} |`
    }
  })
