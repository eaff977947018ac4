/**
 * The nemesis: slotkeeper under random faults, judged by what a fencing receiver accepted against what the surviving
 * primary committed.
 *
 * **The system**: a PostgreSQL 18 primary with a streaming standby (slot sync on); two streams, one per lock mode
 * (`adv`: advisory, `lease`: lease), each with its own table, a writer committing one row per transaction every
 * 20 ms, and three `slotkeeper run` processes competing for it, each reaching the database through its own
 * `FaultProxy` (one address: on a failover every proxy moves to the promoted standby, as a virtual IP would). All
 * six write to one `FencingReceiver` (http sink), which refuses an epoch older than one that has written.
 *
 * **The faults**, one at a time, at random (seeded), 2–6 s apart: SIGKILL of an instance (restarted 1–3 s later, as an
 * orchestrator would), SIGSTOP of an instance for 4–10 s (longer than the 3 s release bound), a half-open partition of
 * an instance for 2–10 s, a server restart, a server crash (SIGKILL of every server process, crash recovery), and a
 * failover (the primary killed, the standby promoted once its copies of both slots are sync-ready, a new standby
 * built). An instance that exits by itself is counted and restarted.
 *
 * **The verdict**, once the faults stop, every instance runs and every committed row has arrived (or a minute
 * passed): per stream, rows committed on the surviving primary, lost (committed, never accepted), phantoms
 * (accepted, not committed there), duplicates beyond the durable position (a row accepted again by a connection that
 * started after a checkpoint covering it was saved — checkpoints polled from the primary), stale batches accepted (an
 * epoch below one accepted before), batches of an old owner accepted after a newer one's first (overlapping active
 * intervals as the receiver saw them), refused (409) stale batches, takeovers, and unexpected exits.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { appendFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { FaultProxy, FencingReceiver, PgCluster, type PgServer, ProcessControl, Standby } from "@slotkeeper/testkit"
import { Effect, Fiber } from "effect"

const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "packages", "cli", "bin", "slotkeeper.js")

export type Mode = "advisory" | "lease"
export type FaultKind = "kill" | "pause" | "partition" | "restart" | "crash" | "failover"

export interface Options {
  /** How long faults are injected (one every 2-6 s after the previous one ended). */
  readonly seconds: number
  /**
   * Inject exactly this many faults instead, however long they take (`seconds` is then only reported): the seeded
   * sequence of faults is the same on a fast and a slow machine, where a time budget fits more or fewer of them.
   */
  readonly faults?: number
  readonly seed: number
  /** Says what happens, as it happens (default: nothing). */
  readonly log?: (line: string) => void
  /** Where each instance's stderr is appended (`<name>.log`), for a post-mortem; default: kept in memory only. */
  readonly logDir?: string
}

export interface StreamReport {
  readonly mode: Mode
  readonly committed: number
  readonly accepted: number
  readonly lost: number
  readonly phantoms: number
  readonly duplicatesBeyondDurable: number
  readonly staleAccepted: number
  readonly lateAccepted: number
  readonly refused: number
  readonly takeovers: number
  readonly unexpectedExits: number
  readonly exitLines: ReadonlyArray<string>
  /** The lost rows' ids, as ranges (`12-40`), for a post-mortem. */
  readonly lostIds: string
}

export interface Report {
  readonly seconds: number
  readonly seed: number
  readonly faults: Readonly<Record<FaultKind, number>>
  readonly streams: ReadonlyArray<StreamReport>
  /** Every committed row arrived before the quiet period ran out. */
  readonly settled: boolean
}

/** mulberry32: a small seeded PRNG, so that a run can be repeated. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const timing: Record<Mode, ReadonlyArray<string>> = {
  advisory: ["--heartbeat-interval", "200ms", "--loss-deadline", "1s", "--server-release-bound", "3s"],
  lease: ["--lease-duration", "3s", "--renew-interval", "500ms"]
}

const streamOf = (mode: Mode) => (mode === "advisory" ? "adv" : "lease")
const tableOf = (mode: Mode) => `items_${streamOf(mode)}`

interface Instance {
  readonly mode: Mode
  readonly name: string
  readonly proxy: FaultProxy.FaultProxy
  child: ChildProcess | undefined
  /** Set while the harness has it stopped or paused on purpose. */
  held: boolean
  stderr: string
  readonly exits: Array<string>
}

const parseLsn = (text: string): bigint => {
  const [hi, lo] = text.split("/")
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

export const run = (options: Options) =>
  Effect.scoped(Effect.gen(function*() {
    const say = options.log ?? (() => {})
    const random = prng(options.seed)
    const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(random() * xs.length)]!
    const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo))
    const started = performance.now()
    const elapsed = () => ((performance.now() - started) / 1000).toFixed(1)
    const note = (line: string) => say(`[${elapsed()} s] ${line}`)

    let primary: PgServer.PgServer = yield* PgCluster.make({ major: 18, name: "nemesis-1" })
    for (const mode of ["advisory", "lease"] as const) yield* primary.query(`CREATE TABLE ${tableOf(mode)} (id int PRIMARY KEY, body text)`)
    let standby: Standby.Standby | undefined = yield* Standby.make(primary, { name: "standby_1" })
    let generation = 1
    const receiver = yield* FencingReceiver.make()

    // -- instances -------------------------------------------------------------------------------------------------
    const instances: Array<Instance> = []
    for (const mode of ["advisory", "lease"] as const) {
      for (let i = 1; i <= 3; i++) {
        instances.push({ mode, name: `${streamOf(mode)}-${i}`, proxy: yield* FaultProxy.make({ targetPort: primary.port }), child: undefined, held: false, stderr: "", exits: [] })
      }
    }
    const launch = (instance: Instance) => {
      const url = primary.urlWith({ host: instance.proxy.host, port: instance.proxy.port })
      const debug = process.env.SLOTKEEPER_LOG_LEVEL === "debug" ? ["--log-level", "debug"] : []
      const child = spawn(process.execPath, [bin, ...debug, "run", "--database-url", url, "--table", tableOf(instance.mode), "--stream-id", streamOf(instance.mode),
        "--instance-id", instance.name, "--lock", instance.mode, "--sink", receiver.url, "--acquire-interval", "200ms", "--wal-heartbeat-interval", "2s",
        ...timing[instance.mode]], { stdio: ["ignore", "ignore", "pipe"] })
      instance.child = child
      child.stderr!.on("data", (d: Buffer) => {
        if (options.logDir !== undefined) appendFileSync(join(options.logDir, `${instance.name}.log`), d)
        instance.stderr += d.toString()
        if (instance.stderr.length > 400_000) instance.stderr = instance.stderr.slice(-200_000)
      })
      child.on("exit", (code, signal) => {
        if (instance.child !== child) return
        instance.child = undefined
        if (options.logDir !== undefined) appendFileSync(join(options.logDir, `${instance.name}.log`), `--- exited ${code ?? signal} at ${elapsed()} s\n`)
        if (!instance.held) {
          const last = instance.stderr.trim().split("\n").at(-1) ?? ""
          instance.exits.push(`${instance.name} exited ${code ?? signal}: ${last}`)
          note(`UNEXPECTED: ${instance.name} exited ${code ?? signal}: ${last}`)
        }
      })
    }
    yield* Effect.addFinalizer(() =>
      Effect.promise(() =>
        Promise.all(instances.map((i) =>
          new Promise<void>((resolve) => {
            const child = i.child
            if (child === undefined || child.exitCode !== null) return resolve()
            i.held = true
            try {
              process.kill(child.pid!, "SIGCONT")
            } catch {
              // gone
            }
            const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
            child.once("exit", () => {
              clearTimeout(timer)
              resolve()
            })
            child.kill("SIGTERM")
          })
        )).then(() => undefined)
      )
    )
    for (const instance of instances) launch(instance)
    // an orchestrator: an instance that exited by itself is started again
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep("1 second"), Effect.sync(() => {
      for (const instance of instances) if (instance.child === undefined && !instance.held) launch(instance)
    }))))

    // -- writers and the checkpoint poll ---------------------------------------------------------------------------
    // rows are written once both streams capture (their slots exist): what committed before is not theirs
    for (;;) {
      const [slots] = yield* primary.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'slotkeeper\\_%' AND NOT temporary"
      ).pipe(Effect.orElseSucceed(() => [{ n: 0 }]))
      if ((slots?.n ?? 0) >= 2) break
      yield* Effect.sleep("200 millis")
    }
    const written: Record<Mode, { next: number }> = { advisory: { next: 1 }, lease: { next: 1 } }
    const writers = yield* Effect.forEach(["advisory", "lease"] as const, (mode) =>
      Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const id = written[mode].next
        const ok = yield* Effect.suspend(() => primary.query(`INSERT INTO ${tableOf(mode)} VALUES (${id}, 'row ${id}') ON CONFLICT DO NOTHING`)).pipe(
          Effect.as(true),
          Effect.orElseSucceed(() => false)
        )
        if (ok) written[mode].next++
        yield* Effect.sleep(ok ? "20 millis" : "200 millis")
      }))))
    // the durable positions, as the surviving primary has them (after a failover: from the promoted one's)
    const saved: Record<string, Array<{ readonly at: number; readonly lsn: bigint }>> = { adv: [], lease: [] }
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const rows = yield* Effect.suspend(() => primary.query<{ stream_id: string; lsn: string }>(
        "SELECT stream_id, lsn::text AS lsn FROM slotkeeper.checkpoints WHERE to_regclass('slotkeeper.checkpoints') IS NOT NULL"
      )).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ stream_id: string; lsn: string }>))
      const at = performance.now()
      for (const r of rows) saved[r.stream_id]?.push({ at, lsn: parseLsn(r.lsn) })
      yield* Effect.sleep("200 millis")
    })))

    // -- faults ------------------------------------------------------------------------------------------------------
    const faults: Record<FaultKind, number> = { kill: 0, pause: 0, partition: 0, restart: 0, crash: 0, failover: 0 }
    /** Every stream's slot has a sync-ready copy on the standby: a safe failover target. */
    const standbyReady = Effect.suspend(() =>
      standby === undefined ? Effect.succeed(false) : Effect.map(
        standby.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'slotkeeper\\_%' AND synced AND NOT temporary AND invalidation_reason IS NULL"
        ),
        (rows) => (rows[0]?.n ?? 0) >= 2
      ).pipe(Effect.orElseSucceed(() => false)))
    let failovers: Array<number> = []

    const inject = Effect.gen(function*() {
      const kinds: Array<FaultKind> = ["kill", "kill", "pause", "pause", "partition", "partition", "restart", "crash"]
      if (yield* standbyReady) kinds.push("failover")
      const kind = pick(kinds)
      const running = instances.filter((i) => i.child !== undefined && !i.held)
      switch (kind) {
        case "kill": {
          if (running.length === 0) return
          const victim = pick(running)
          victim.held = true
          note(`SIGKILL ${victim.name}`)
          victim.child!.kill("SIGKILL")
          yield* Effect.sleep(`${between(1000, 3000)} millis`)
          victim.held = false
          launch(victim)
          break
        }
        case "pause": {
          if (running.length === 0) return
          const victim = pick(running)
          const ms = between(4000, 10000)
          note(`SIGSTOP ${victim.name} for ${ms} ms`)
          victim.held = true
          yield* ProcessControl.whilePaused(victim.child!.pid!, Effect.sleep(`${ms} millis`)).pipe(Effect.ignore)
          victim.held = false
          break
        }
        case "partition": {
          const victim = pick(instances)
          const ms = between(2000, 10000)
          note(`partition ${victim.name} for ${ms} ms`)
          yield* victim.proxy.setMode("blackhole")
          yield* Effect.sleep(`${ms} millis`)
          yield* victim.proxy.setMode("pass")
          break
        }
        case "restart":
          note("server restart")
          yield* primary.restart
          break
        case "crash":
          note("server crash")
          yield* primary.crash
          break
        case "failover": {
          note(`failover: ${standby!.name} promoted`)
          for (const i of instances) yield* i.proxy.setMode("reset")
          yield* primary.kill
          yield* standby!.promote
          primary = standby!
          standby = undefined
          failovers = [...failovers, performance.now()]
          for (const i of instances) {
            yield* i.proxy.setTarget(primary.port)
            yield* i.proxy.setMode("pass")
          }
          // the checkpoints the promoted server has are the durable ones from now on
          for (const list of Object.values(saved)) list.length = 0
          generation++
          standby = yield* Standby.make(primary, { name: `standby_${generation}` })
          note(`new standby ${standby.name}`)
          break
        }
      }
      faults[kind]++
    })

    const deadline = performance.now() + options.seconds * 1000
    note(options.faults === undefined ? `faults for ${options.seconds} s (seed ${options.seed})` : `${options.faults} faults (seed ${options.seed})`)
    // counted as injected (a kind that found nothing to act on, such as no running instance, is not one)
    const injected = () => Object.values(faults).reduce((a, b) => a + b, 0)
    while (options.faults === undefined ? performance.now() < deadline : injected() < options.faults) {
      yield* Effect.sleep(`${between(2000, 6000)} millis`)
      if (options.faults === undefined && performance.now() >= deadline) break
      yield* inject
    }

    // -- quiet: heal, stop writing, wait for every committed row --------------------------------------------------
    note("faults stop; waiting for every committed row")
    for (const i of instances) yield* i.proxy.setMode("pass")
    yield* Effect.forEach(writers, Fiber.interrupt, { discard: true })
    const committedOf = (mode: Mode) =>
      Effect.map(primary.query<{ id: number }>(`SELECT id FROM ${tableOf(mode)}`), (rows) => new Set(rows.map((r) => r.id)))
    const committed = { advisory: yield* committedOf("advisory"), lease: yield* committedOf("lease") }
    const acceptedLines = (mode: Mode) =>
      receiver.requests.filter((r) => r.status === 200 && r.stream === streamOf(mode)).flatMap((r) =>
        r.lines.filter((l) => l.type === "change").map((l) => ({
          id: Number((l.new as { id: number }).id), commitLsn: parseLsn(String(l.commit_lsn)), at: r.at, epoch: r.epoch, resumedFrom: r.resumedFrom
        }))
      )
    const quietUntil = performance.now() + 90_000
    let settled = false
    while (performance.now() < quietUntil) {
      settled = (["advisory", "lease"] as const).every((mode) => {
        const got = new Set(acceptedLines(mode).map((l) => l.id))
        return [...committed[mode]].every((id) => got.has(id))
      })
      if (settled) break
      yield* Effect.sleep("500 millis")
    }
    note(settled ? "every committed row arrived" : "not every committed row arrived within 90 s")

    const streams = (["advisory", "lease"] as const).map((mode): StreamReport => {
      const stream = streamOf(mode)
      const lines = acceptedLines(mode)
      const got = new Set(lines.map((l) => l.id))
      // a connection's durable start, as the surviving primary's checkpoints had it before its first batch arrived
      const firstAt = new Map<string, number>()
      const sessionOf = (l: { readonly epoch: number; readonly resumedFrom: string | undefined }) => `${l.epoch}@${l.resumedFrom}`
      for (const l of lines) if (!firstAt.has(sessionOf(l))) firstAt.set(sessionOf(l), l.at)
      const savedBefore = (at: number) => saved[stream]!.filter((s) => s.at < at).reduce((m, s) => (s.lsn > m ? s.lsn : m), 0n)
      const firstSeen = new Set<number>()
      let duplicatesBeyondDurable = 0
      for (const l of lines) {
        if (!firstSeen.has(l.id)) {
          firstSeen.add(l.id)
          continue
        }
        // seen before: a violation if it was durably saved before this connection started (and no failover since)
        const sessionStart = firstAt.get(sessionOf(l)) ?? l.at
        if (failovers.some((f) => f > sessionStart - 60_000 && f < l.at)) continue
        if (l.commitLsn < savedBefore(sessionStart)) duplicatesBeyondDurable++
      }
      const requests = receiver.requests.filter((r) => r.stream === stream)
      const accepted = requests.filter((r) => r.status === 200)
      let lateAccepted = 0
      let top = 0
      let firstOfTop = Number.POSITIVE_INFINITY
      for (const r of accepted) {
        if (r.epoch > top) {
          top = r.epoch
          firstOfTop = r.at
        } else if (r.epoch < top && r.at > firstOfTop) lateAccepted++
      }
      const exits = instances.filter((i) => i.mode === mode).flatMap((i) => i.exits)
      return {
        mode,
        committed: committed[mode].size,
        accepted: lines.length,
        lost: [...committed[mode]].filter((id) => !got.has(id)).length,
        phantoms: [...got].filter((id) => !committed[mode].has(id)).length,
        duplicatesBeyondDurable,
        staleAccepted: receiver.staleAccepted(),
        lateAccepted,
        refused: requests.filter((r) => r.status === 409).length,
        takeovers: new Set(accepted.map((r) => r.epoch)).size - 1,
        unexpectedExits: exits.length,
        exitLines: exits,
        lostIds: ranges([...committed[mode]].filter((id) => !got.has(id)))
      }
    })
    return { seconds: options.seconds, seed: options.seed, faults, streams, settled } satisfies Report
  }))

/** `[1, 2, 3, 7]` as `1-3, 7`. */
const ranges = (ids: ReadonlyArray<number>): string => {
  const sorted = [...ids].sort((a, b) => a - b)
  const out: Array<string> = []
  for (let i = 0; i < sorted.length; i++) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++
    out.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`)
    i = j
  }
  return out.join(", ")
}

/** The report as a markdown table. */
export const table = (report: Report): string => {
  const rows: Array<[string, (s: StreamReport) => string | number]> = [
    ["rows committed (on the surviving primary)", (s) => s.committed],
    ["change lines accepted by the receiver", (s) => s.accepted],
    ["**lost** (committed, never accepted)", (s) => s.lost],
    ["**phantoms** (accepted, never committed there)", (s) => s.phantoms],
    ["**duplicates beyond the durable position**", (s) => s.duplicatesBeyondDurable],
    ["**stale batches accepted** (epoch below one accepted before)", (s) => s.staleAccepted],
    ["**old owner's batches accepted after the new owner's first**", (s) => s.lateAccepted],
    ["stale batches refused (409)", (s) => s.refused],
    ["takeovers (new epochs)", (s) => s.takeovers],
    ["unexpected exits (restarted)", (s) => s.unexpectedExits]
  ]
  const header = `| | ${report.streams.map((s) => s.mode).join(" | ")} |\n|---|${report.streams.map(() => "---:").join("|")}|`
  const body = rows.map(([label, f]) => `| ${label} | ${report.streams.map((s) => String(f(s))).join(" | ")} |`).join("\n")
  const faults = Object.entries(report.faults).map(([k, n]) => `${k} ${n}`).join(", ")
  return `${header}\n${body}\n\nFaults injected (${report.seconds} s, seed ${report.seed}): ${faults}. Every committed row arrived: ${report.settled ? "yes" : "**no**"}.`
}

/** Whether the run kept every guarantee. */
export const clean = (report: Report): boolean =>
  report.settled && report.streams.every((s) => s.lost === 0 && s.phantoms === 0 && s.duplicatesBeyondDurable === 0 && s.staleAccepted === 0 && s.lateAccepted === 0)

