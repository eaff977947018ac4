/**
 * Helpers for the CLI tests: the built `slotkeeper` run as a child process (to its end, or running, with its NDJSON
 * lines and its replication sessions), a free port, HTTP probes and polling waits.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Lsn } from "@slotkeeper/core"
import { DeliveryCheck, Wait } from "@slotkeeper/testkit"
import { Effect } from "effect"

export const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "slotkeeper.js")

/** Runs `slotkeeper ...args` to its end: exit code, stdout, stderr. */
export const cli = (...args: Array<string>) =>
  Effect.promise(() =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })
  )

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })

/** Polls `probe` (an effect) until it gives a value, or dies after `timeoutMs`. */
export const untilEffect = <A, E>(probe: Effect.Effect<A | undefined, E>, timeoutMs: number, what: string) => Wait.eventually(probe, timeoutMs, what, 20)

/** `untilEffect` for a plain function. */
export const until = <A>(probe: () => A | undefined, timeoutMs: number, what: string) => untilEffect(Effect.sync(probe), timeoutMs, what)

export interface Running {
  readonly child: ChildProcess
  /** The NDJSON lines on stdout so far. */
  readonly lines: Array<Record<string, unknown>>
  /** When each of `lines` arrived (`performance.now()`). */
  readonly arrivedAt: Array<number>
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

/** Starts `slotkeeper run` with `args`; stopped with SIGTERM when the scope closes (if still running). */
export const start = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => startCommand("run", args, env)

/** Starts `slotkeeper <command>` with `args`; stopped with SIGTERM when the scope closes (if still running). */
export const startCommand = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = spawn(process.execPath, [bin, command, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
      const lines: Array<Record<string, unknown>> = []
      const arrivedAt: Array<number> = []
      let pending = ""
      let err = ""
      child.stdout!.on("data", (d: Buffer) => {
        const now = performance.now()
        pending += d.toString()
        const parts = pending.split("\n")
        pending = parts.pop()!
        for (const p of parts) {
          if (p.length === 0) continue
          lines.push(JSON.parse(p) as Record<string, unknown>)
          arrivedAt.push(now)
        }
      })
      child.stderr!.on("data", (d: Buffer) => (err += d.toString()))
      // "close", not "exit": stdout and stderr are read to their end by then
      const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)))
      return { child, lines, arrivedAt, stderr: () => err, exited }
    }),
    // a process that does not stop within 30 s of SIGTERM is a bug (shutdown is bounded): killed, and the test dies
    (r) =>
      Effect.promise(() => (r.child.exitCode === null && r.child.signalCode === null ? (r.child.kill("SIGTERM"), r.exited) : r.exited)).pipe(
        Effect.timeoutOrElse({
          duration: "30 seconds",
          orElse: () =>
            Effect.andThen(
              Effect.sync(() => r.child.kill("SIGKILL")),
              Effect.die(new Error(`slotkeeper ${command} did not exit within 30 s of SIGTERM:\n${r.stderr().slice(-2000)}`))
            )
        })
      )
  )

/** The `id` of each change line, in order. */
export const ids = (r: Running) => r.lines.filter((l) => l.type === "change").map((l) => Number((l.new as { id: number }).id))

/** GET on the instance's health server: status and JSON body. */
export const get = (port: number, path: string) =>
  Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown })))

/** Changes committed before the stream's slot exists are not the stream's: wait for a replication connection. */
export const streaming = (pg: { query: (sql: string) => Effect.Effect<ReadonlyArray<unknown>, unknown> }) =>
  untilEffect(
    Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE temporary AND active"), (rows) => (rows.length > 0 ? true : undefined)),
    30_000,
    "a replication connection"
  )

/**
 * What a process delivered, as `DeliveryCheck` input: its change lines split into replication sessions (one
 * connection never goes back, so a session ends where `(commit_lsn, seq)` stops increasing), each session starting
 * at the position its "streaming from" log line names. With fewer sessions seen than logged (a connection that
 * delivered nothing), the k-th seen is judged by the k-th logged, an earlier and so more lenient start.
 */
export const sessions = (r: Running, firstSession: number) => {
  const starts = [...r.stderr().matchAll(/streaming from ([0-9A-F]+\/[0-9A-F]+)/g)].map((m) => Lsn.parseUnsafe(m[1]!))
  const delivered: Array<DeliveryCheck.Delivered<number>> = []
  let session = firstSession
  let previous: [bigint, number] | undefined
  for (const l of r.lines) {
    if (l.type !== "change") continue
    const at: [bigint, number] = [Lsn.parseUnsafe(l.commit_lsn as string), l.seq as number]
    if (previous !== undefined && (at[0] < previous[0] || (at[0] === previous[0] && at[1] <= previous[1]))) session++
    previous = at
    delivered.push({ key: Number((l.new as { id: number }).id), endLsn: at[0], session })
  }
  const used = session - firstSession + 1
  if (delivered.length > 0 && used > starts.length) throw new Error(`${used} sessions delivered, but only ${starts.length} "streaming from" lines were logged`)
  // commit_lsn is where a commit starts, so "ended at or below the start" is commit_lsn < start
  const sessionStarts = new Map(starts.slice(0, used).map((lsn, k) => [firstSession + k, lsn - 1n] as const))
  return { delivered, sessionStarts, next: session + 1 }
}

/** When `pattern` was logged first (the log line's time of day, in ms), or `undefined`. */
export const loggedAt = (r: Running, pattern: RegExp): number | undefined => {
  for (const line of r.stderr().split("\n")) {
    const m = /^\[(\d\d):(\d\d):(\d\d)\.(\d\d\d)\]/.exec(line)
    if (m !== null && pattern.test(line)) return ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(m[4])
  }
  return undefined
}

/**
 * After ownership went from `a` to `b` while a writer commits rows into `items`: waits until `b` delivered 30 rows
 * that `a` never did (its first lines may be `a`'s unacknowledged tail again), runs `stopWriter`, waits until every
 * committed row was delivered by one of them, and judges both processes' deliveries against the table.
 */
export const judgeHandover = <E>(
  pg: { query: <Row>(sql: string) => Effect.Effect<ReadonlyArray<Row>, E> },
  a: Running,
  b: Running,
  stopWriter: Effect.Effect<void> = Effect.void
) =>
  Effect.gen(function*() {
    const lastOfA = Math.max(...ids(a))
    yield* until(() => (ids(b).filter((id) => id > lastOfA).length >= 30 ? true : undefined), 30_000, "b delivering")
    yield* stopWriter
    const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
    yield* until(() => (committed.every((id) => ids(a).includes(id) || ids(b).includes(id)) ? true : undefined), 30_000, "every committed row delivered")
    const fromA = sessions(a, 1)
    const fromB = sessions(b, fromA.next)
    const report = DeliveryCheck.check({
      committed,
      delivered: [...fromA.delivered, ...fromB.delivered],
      sessionStarts: new Map([...fromA.sessionStarts, ...fromB.sessionStarts])
    })
    return { committed, report }
  })

/**
 * The walsenders that stream (`byStream` reads their names). Not those still in `startup`: a walsender creating its
 * slot is listed before the slot captures anything, and a row committed then is not the stream's.
 */
export const streamingWalsenders = "SELECT application_name FROM pg_stat_replication WHERE state IN ('catchup', 'streaming')"

/** Which instances stream each stream, from the walsenders' application names (`slotkeeper:<stream>:<instance>:<role>`). */
export const byStream = (applicationNames: Iterable<string>): Map<string, Array<string>> => {
  const by = new Map<string, Array<string>>()
  for (const name of applicationNames) {
    const [, stream, instance] = name.split(":")
    if (stream !== undefined && instance !== undefined) by.set(stream, [...(by.get(stream) ?? []), instance])
  }
  return by
}
