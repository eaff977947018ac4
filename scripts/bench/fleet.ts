/**
 * Fleet, two benchmarks.
 *
 * **Backlog** (`FLEET_BACKLOG_STREAMS`, default 30, each `FLEET_BACKLOG_ROWS`, default 20,000 rows, over
 * `FLEET_RUNNERS`, default 3): streams each with its own database, their slots made by a first start of the fleet;
 * the runners stopped, the backlog committed (100 rows per transaction), the runners started again: the time from
 * their start to every row in every stream's sink file, as aggregate rows/s, against one `slotkeeper run` draining the
 * same backlog of one stream alone (the sum of single-stream runs is that rate times the streams). Then one runner
 * is SIGKILLed: the time until every one of its streams streams on another runner.
 *
 * **Idle streams**: what an idle stream costs a runner. One `slotkeeper fleet` runner with no stream, then with `FLEET_STREAMS`
 * (default 100) idle streams (each its own table in one database, the file sink): once every stream streams, RSS is
 * sampled (the server allows 2 slots and a walsender per stream: the persistent slot and its temporary clone), CPU is measured over `FLEET_IDLE_SECONDS` (default 30) of idleness (utime + stime from /proc), and the
 * server's sessions are counted by role (from each session's `application_name`, `slotkeeper:<stream>:<instance>:<role>`,
 * the pool the streams share `slotkeeper:*:<instance>:guard`).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import NodePg from "pg"
import { PgCluster, Wait } from "@slotkeeper/testkit"
import { byStream, freePort, streamingWalsenders } from "../../packages/cli/test/cli-helpers.ts"
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
      "SELECT split_part(application_name, ':', 4) AS role, count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'slotkeeper:s%' OR application_name LIKE 'slotkeeper:*:%' GROUP BY 1 ORDER BY 1"
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

export interface FleetBacklog {
  readonly streams: number
  readonly rows: number
  readonly runners: number
  readonly fleetSeconds: number
  readonly singleSeconds: number
  readonly killedStreams: number
  readonly recoverySeconds: number
}

/**
 * Whether row `id`'s change has arrived in a sink file: read from where the last call stopped (checkpoint lines follow
 * the changes, so the tail is not enough), the text across reads kept for a match split between two.
 */
const arrival = (path: string, id: number) => {
  let offset = 0
  let carry = ""
  let seen = false
  const needle = `"id":${id},`
  return () => {
    if (seen) return true
    try {
      const fd = openSync(path, "r")
      try {
        const size = fstatSync(fd).size
        if (size <= offset) return false
        const buffer = Buffer.alloc(size - offset)
        readSync(fd, buffer, 0, buffer.length, offset)
        offset = size
        const text = carry + buffer.toString("latin1")
        seen = text.includes(needle)
        carry = text.slice(-needle.length)
        return seen
      } finally {
        closeSync(fd)
      }
    } catch {
      return false
    }
  }
}

export const backlog = (count: number, rows: number, runnerCount: number, log: (text: string) => void) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18, settings: { max_connections: count * 6 + 100, max_replication_slots: count * 2 + 10, max_wal_senders: count + 10 } })
    const ids = Array.from({ length: count }, (_, i) => `b${i + 1}`)
    const urlOf = (db: string) => {
      const u = new URL(pg.url)
      u.pathname = `/${db}`
      return u.toString()
    }
    for (const id of ids) {
      yield* pg.query(`CREATE DATABASE ${id}`)
      yield* Effect.promise(() => withClient(urlOf(id), (c) => c.query("CREATE TABLE items (id int PRIMARY KEY, body text)")))
    }
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-fleet-backlog-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const sinkOf = (id: string) => join(dir, `${id}.ndjson`)
    const file = join(dir, "fleet.json")
    // FLEET_DEFAULTS: the file's `defaults` (JSON), e.g. '{"lossDeadline":"10s"}'
    const defaults = JSON.parse(process.env.FLEET_DEFAULTS ?? "{}") as Record<string, unknown>
    writeFileSync(file, JSON.stringify({ control: { databaseUrl: pg.url }, defaults, streams: ids.map((id) => ({ id, databaseUrl: urlOf(id), tables: ["public.items"], sink: `file:${sinkOf(id)}` })) }))
    const env = cliEnv()
    // each process's log, kept for a post-mortem
    const logs = join(tmpdir(), "slotkeeper-fleet-backlog-logs")
    mkdirSync(logs, { recursive: true })
    let started = 0
    const start = (args: ReadonlyArray<string>) =>
      Effect.acquireRelease(Effect.sync(() => {
        const out = openSync(join(logs, `${args[0]}-${args.includes("--instance-id") ? args[args.indexOf("--instance-id") + 1] : ""}-${++started}.log`), "w")
        const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "ignore", out], env })
        child.once("exit", (code, signal) => code !== 0 && signal === null ? log(`fleet backlog: ${args[0]} exited with ${code} (logs in ${logs})`) : undefined)
        const closed = new Promise<void>((resolve) => child.once("close", () => resolve()))
        return { child, closed }
      }), (r) => Effect.promise(async () => {
        r.child.kill("SIGTERM")
        await r.closed
      }))
    const runner = (name: string) =>
      Effect.gen(function*() {
        const port = yield* Effect.promise(() => freePort())
        return { name, ...(yield* start(["fleet", "--config", file, "--instance-id", name, "--runner-host", "127.0.0.1", "--runner-port", String(port)])) }
      })
    const streaming = Effect.map(pg.query<{ application_name: string }>(streamingWalsenders), (r) => byStream(r.map((x) => x.application_name)))
    const stop = (r: { child: ChildProcess; closed: Promise<void> }) => Effect.promise(async () => {
      r.child.kill("SIGTERM")
      await r.closed
    })
    // the slots: a first start of the fleet, stopped once every stream streams
    log(`fleet backlog: ${count} streams, making their slots`)
    yield* Effect.scoped(Effect.gen(function*() {
      for (let i = 1; i <= runnerCount; i++) yield* runner(`r${i}`)
      yield* Wait.eventually(Effect.map(streaming, (by) => (by.size >= count ? true : undefined)), 600_000, `${count} streams streaming`, 500)
    }))
    const fill = (from: number) =>
      Effect.forEach(ids, (id) => Effect.promise(() => withClient(urlOf(id), async (c) => {
        for (let k = from; k < from + rows; k += 100) await c.query("INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series($1::int, $2::int) g", [k, k + 99])
      })), { concurrency: 4, discard: true })
    log(`fleet backlog: ${rows} rows into each of ${count} databases`)
    yield* fill(1)
    log(`fleet backlog: ${runnerCount} runners draining it`)
    const drainStart = performance.now()
    const running = yield* Effect.forEach(Array.from({ length: runnerCount }, (_, i) => `r${i + 1}`), runner)
    const arrived = ids.map((id) => arrival(sinkOf(id), rows))
    yield* Wait.eventually(Effect.sync(() => (arrived.every((f) => f()) ? true : undefined)), 900_000, "every backlog delivered", 250)
    const fleetSeconds = (performance.now() - drainStart) / 1000
    log(`fleet backlog: drained in ${fleetSeconds.toFixed(1)} s`)
    // a runner killed: the time until every one of its streams streams elsewhere
    yield* Wait.eventually(Effect.map(streaming, (by) => (by.size >= count ? true : undefined)), 120_000, "every stream streaming", 250)
    const victim = running[0]!
    const theirs = [...(yield* streaming)].filter(([, instances]) => instances.includes(victim.name)).map(([id]) => id)
    const killedAt = performance.now()
    victim.child.kill("SIGKILL")
    yield* Effect.promise(() => victim.closed)
    yield* Wait.eventually(Effect.map(streaming, (by) => (theirs.every((id) => (by.get(id) ?? []).some((i) => i !== victim.name)) ? true : undefined)), 120_000, "the killed runner's streams streaming elsewhere", 100)
    const recoverySeconds = (performance.now() - killedAt) / 1000
    log(`fleet backlog: the killed runner's ${theirs.length} streams streaming elsewhere after ${recoverySeconds.toFixed(1)} s`)
    yield* Effect.forEach(running.slice(1), stop, { discard: true })
    // one stream alone: the same backlog again, drained by one slotkeeper run
    yield* Effect.promise(() => withClient(urlOf("b1"), async (c) => {
      for (let k = rows + 1; k <= 2 * rows; k += 100) await c.query("INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series($1::int, $2::int) g", [k, k + 99])
    }))
    // the stream's own sink file: its durable position is there
    const single = sinkOf("b1")
    const alone = performance.now()
    yield* Effect.scoped(Effect.gen(function*() {
      yield* start(["run", "--database-url", urlOf("b1"), "--table", "public.items", "--stream-id", "b1", "--sink", `file:${single}`, "--instance-id", "single"])
      const done = arrival(single, 2 * rows)
      yield* Wait.eventually(Effect.sync(() => (done() ? true : undefined)), 300_000, "one stream's backlog delivered", 100)
    }))
    const singleSeconds = (performance.now() - alone) / 1000
    log(`fleet backlog: one stream alone drained in ${singleSeconds.toFixed(1)} s`)
    return { streams: count, rows, runners: runnerCount, fleetSeconds, singleSeconds, killedStreams: theirs.length, recoverySeconds } satisfies FleetBacklog
  }))

const withClient = async <A>(url: string, f: (c: NodePg.Client) => Promise<A>) => {
  const c = new NodePg.Client({ connectionString: url })
  await c.connect()
  try {
    return await f(c)
  } finally {
    await c.end()
  }
}

export const backlogText = (b: FleetBacklog) => {
  const aggregate = (b.streams * b.rows) / b.fleetSeconds
  const single = b.rows / b.singleSeconds
  return `## Fleet: backlog and takeover

${b.streams} streams (one database each, one server), each with a backlog of ${b.rows.toLocaleString("en")} rows (100 per transaction) committed while no runner ran, drained by ${b.runners} \`slotkeeper fleet\` runners started together, all on this machine with the server. One stream's backlog drained by one \`slotkeeper run\` alone is the single-stream run; the sum of single-stream runs is its rate times ${b.streams}. Times are from the processes' start to the last row in the sink file.

| fleet: all backlogs drained | aggregate rows/s | one stream alone | single-stream rows/s | sum of single-stream runs | fleet / sum | a killed runner's streams (${b.killedStreams}) streaming elsewhere |
|---|---|---|---|---|---|---|
| ${b.fleetSeconds.toFixed(1)} s | ${Math.round(aggregate).toLocaleString("en")} | ${b.singleSeconds.toFixed(1)} s | ${Math.round(single).toLocaleString("en")} | ${Math.round(single * b.streams).toLocaleString("en")} | ${(aggregate / (single * b.streams)).toFixed(2)} | ${b.recoverySeconds.toFixed(1)} s |`
}

/** `FLEET_PARTS` (default `backlog,idle`) chooses the benchmarks. */
export const report = (log: (text: string) => void) =>
  Effect.gen(function*() {
    const parts = (process.env.FLEET_PARTS ?? "backlog,idle").split(",")
    const texts: Array<string> = []
    if (parts.includes("backlog")) {
      texts.push(backlogText(yield* backlog(Number(process.env.FLEET_BACKLOG_STREAMS ?? 30), Number(process.env.FLEET_BACKLOG_ROWS ?? 20_000), Number(process.env.FLEET_RUNNERS ?? 3), log)))
    }
    if (parts.includes("idle")) {
      const count = Number(process.env.FLEET_STREAMS ?? 100)
      const seconds = Number(process.env.FLEET_IDLE_SECONDS ?? 30)
      log(`fleet: ${count} idle streams on one runner, ${seconds} s idle`)
      const r = yield* idle(count, seconds)
      texts.push(`## Fleet: idle streams\n\nOne \`slotkeeper fleet\` runner: with one stream, then with ${r.streams} idle streams (one table each, in one database, the file sink), added to its file while it runs. All ${r.streams} streaming ${r.startSeconds.toFixed(1)} s after the file changed.\n\n| RSS, one stream | RSS, ${r.streams} streams | per stream | CPU while idle (${seconds} s) | sessions per stream, by role |\n|---|---|---|---|---|\n| ${r.baseRssMB} MB | ${r.rssMB} MB | ${r.perStreamMB.toFixed(2)} MB | ${r.cpuPercent.toFixed(1)}% of a core | ${Object.entries(r.sessionsPerStream).map(([role, n]) => `${role} ${n}`).join(", ")} |`)
    }
    return { text: texts.join("\n\n") }
  })
