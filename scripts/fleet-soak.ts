/**
 * The fleet soak: issue 18's full test, too long for CI (`packages/cli/test/fleet.test.ts` is its shortened version).
 *
 *   node scripts/toolchain.mjs run scripts/fleet-soak.ts      # FLEET_STREAMS=30, FLEET_SECOND_SERVER=6, PARTITION_SECONDS=20
 *
 * **The system**: two PostgreSQL 18 servers; `FLEET_STREAMS` streams, each its own database — the last
 * `FLEET_SECOND_SERVER` on the second server, the others and the control database on the first; a writer committing
 * a row into every stream's table every 100 ms throughout; every stream's sink one `FencingReceiver` (http), which
 * refuses an epoch older than one that has written. Runners are `slotkeeper fleet` processes, each reaching the
 * control database, the first server and the second through its own `FaultProxy` (its own copy of the fleet file,
 * pointing at its proxies), so one runner can be cut from the control database only, or from the stream databases only.
 *
 * **The phases**: three runners start (every stream streaming once, ±1 per runner); SIGKILL of one (its streams
 * stream elsewhere: the time is the takeover); a fourth joins (±1 again); a runner is cut from the control database
 * for `PARTITION_SECONDS` (its streams move: it stops them once it cannot read membership, the others take them) and
 * healed (±1 again); another is cut from the stream databases (its streams cannot stream anywhere until healed:
 * placement keeps them there) and healed.
 *
 * **The verdict**: per stream, rows committed, lost (committed, never accepted), stale or late batches accepted (an
 * epoch below one accepted before: 0 by the receiver's construction, the check of the check), refused (409) batches of
 * deposed owners, and — independent of the fence — how often a stream was seen streaming from two runners at once in
 * `pg_stat_replication` (sampled every 250 ms; a second of it fails the run, one sample is an old walsender still
 * exiting). The report goes to stdout and `docs/fleet-soak.md`; the exit code is the verdict.
 */
import { writeFileSync } from "node:fs"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { FaultProxy, FencingReceiver, PgCluster, type PgServer, Wait } from "@slotkeeper/testkit"
import { Effect, Fiber } from "effect"
import NodePg from "pg"
import { byStream, freePort, startCommand, streamingWalsenders } from "../packages/cli/test/cli-helpers.ts"

const count = Number(process.env.FLEET_STREAMS ?? 30)
const second = Math.min(count, Number(process.env.FLEET_SECOND_SERVER ?? 6))
const partitionSeconds = Number(process.env.PARTITION_SECONDS ?? 20)
const ids = Array.from({ length: count }, (_, i) => `s${i + 1}`)
const onSecond = (id: string) => ids.indexOf(id) >= count - second
const log = (line: string) => process.stderr.write(`[fleet-soak ${new Date().toISOString().slice(11, 19)}] ${line}\n`)

const withUrl = (base: string, db: string, port?: number) => {
  const u = new URL(base)
  u.pathname = `/${db}`
  if (port !== undefined) u.port = String(port)
  return u.toString()
}

const program = Effect.scoped(Effect.gen(function*() {
  const settings = { max_connections: 6 * count + 100, max_replication_slots: 2 * count + 10, max_wal_senders: count + 10 }
  const a = yield* PgCluster.make({ major: 18, settings })
  const b = yield* PgCluster.make({ major: 18, settings })
  const serverOf = (id: string): PgServer.PgServer => (onSecond(id) ? b : a)
  yield* a.query("CREATE DATABASE control")
  for (const id of ids) {
    yield* serverOf(id).query(`CREATE DATABASE ${id}`)
    const c = new NodePg.Client({ connectionString: withUrl(serverOf(id).url, id) })
    yield* Effect.promise(() => c.connect().then(() => c.query("CREATE TABLE items (id int PRIMARY KEY, body text)")).finally(() => c.end()))
  }
  const receiver = yield* FencingReceiver.make()
  const dir = mkdtempSync(join(tmpdir(), "slotkeeper-fleet-soak-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))

  // runners: each with its own proxies and its own copy of the file
  interface Runner {
    readonly name: string
    readonly address: string
    readonly control: FaultProxy.FaultProxy
    readonly streams: ReadonlyArray<FaultProxy.FaultProxy>
    readonly kill: () => Effect.Effect<void>
    readonly stderr: () => string
  }
  const runners: Array<Runner> = []
  const startRunner = (name: string) =>
    Effect.gen(function*() {
      const control = yield* FaultProxy.make({ targetPort: a.port })
      const toA = yield* FaultProxy.make({ targetPort: a.port })
      const toB = yield* FaultProxy.make({ targetPort: b.port })
      const file = join(dir, `fleet-${name}.json`)
      writeFileSync(file, JSON.stringify({
        control: { databaseUrl: withUrl(a.url, "control", control.port) },
        streams: ids.map((id) => ({ id, databaseUrl: withUrl(serverOf(id).url, id, onSecond(id) ? toB.port : toA.port), tables: ["public.items"], sink: receiver.url }))
      }))
      const port = yield* Effect.promise(() => freePort())
      const r = yield* startCommand("fleet", ["--config", file, "--instance-id", name, "--runner-host", "127.0.0.1", "--runner-port", String(port)])
      const runner: Runner = { name, address: `127.0.0.1:${port}`, control, streams: [toA, toB], kill: () => Effect.sync(() => r.child.kill("SIGKILL")), stderr: r.stderr }
      runners.push(runner)
      return runner
    })

  /** Which instances stream each stream, on both servers. */
  const streaming = Effect.map(
    Effect.forEach([a, b], (server) => server.query<{ application_name: string }>(streamingWalsenders)),
    (rows) => byStream(rows.flat().map((r) => r.application_name))
  )
  // sampled throughout: a stream seen streaming from two runners at once
  const twice = new Map<string, number>()
  let phase = "start"
  const twiceByPhase = new Map<string, number>()
  const run = new Map<string, number>()
  let longestRun = 0
  yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
    const by = yield* streaming
    for (const id of ids) {
      if (new Set(by.get(id) ?? []).size > 1) {
        twice.set(id, (twice.get(id) ?? 0) + 1)
        twiceByPhase.set(phase, (twiceByPhase.get(phase) ?? 0) + 1)
        run.set(id, (run.get(id) ?? 0) + 1)
        longestRun = Math.max(longestRun, run.get(id)!)
      } else run.delete(id)
    }
    yield* Effect.sleep("250 millis")
  })))
  /** Waits until every stream streams once, on `names` only, balanced ±1; returns the seconds it took. */
  const settled = (names: ReadonlyArray<string>, what: string, timeoutMs = 180_000) =>
    Effect.gen(function*() {
      const start = performance.now()
      const { c: counts, by } = yield* Wait.eventually(Effect.map(streaming, (by) => {
        if (!ids.every((id) => by.get(id)?.length === 1 && names.includes(by.get(id)![0]!))) return undefined
        const c = names.map((n) => ids.filter((id) => by.get(id)![0] === n).length)
        return Math.max(...c) - Math.min(...c) <= 1 ? { c, by } : undefined
      }), timeoutMs, what, 250)
      const seconds = (performance.now() - start) / 1000
      log(`${what}: ${seconds.toFixed(1)} s (${names.map((n, i) => `${n} ${counts[i]}`).join(", ")})`)
      return { seconds, counts, by }
    })

  const phases: Array<[string, string]> = []
  yield* startRunner("r1")
  yield* startRunner("r2")
  yield* startRunner("r3")
  const first = yield* settled(runners.map((r) => r.name), "three runners: every stream streaming once, ±1", 600_000)
  phases.push(["3 runners start, every stream streaming once", `${first.seconds.toFixed(1)} s; ${first.counts.join("/")}`])

  // writers, from now on (a stream has what was committed after it first started): a row into every stream's
  // table every 100 ms, ids from 1
  const clients = new Map<string, NodePg.Client>()
  for (const id of ids) {
    const c = new NodePg.Client({ connectionString: withUrl(serverOf(id).url, id) })
    yield* Effect.promise(() => c.connect())
    yield* Effect.addFinalizer(() => Effect.promise(() => c.end().catch(() => undefined)))
    clients.set(id, c)
  }
  let committed = 0
  const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
    const next = committed + 1
    yield* Effect.promise(() => Promise.all(ids.map((id) => clients.get(id)!.query("INSERT INTO items VALUES ($1, $2)", [next, id]))))
    committed = next
    yield* Effect.sleep("100 millis")
  })))


  const [r1, r2, r3] = runners as [Runner, Runner, Runner]
  const r1Streams = ids.filter((id) => (first.by.get(id) ?? [])[0] === "r1")
  phase = "kill"
  const killedAt = performance.now()
  yield* r1.kill()
  yield* Wait.eventually(Effect.map(streaming, (by) => (r1Streams.every((id) => (by.get(id) ?? []).some((i) => i !== "r1")) ? true : undefined)), 120_000, "r1's streams streaming elsewhere", 100)
  const takeover = (performance.now() - killedAt) / 1000
  log(`r1's ${r1Streams.length} streams streaming elsewhere: ${takeover.toFixed(1)} s`)
  phases.push([`SIGKILL of r1: its ${r1Streams.length} streams streaming elsewhere`, `${takeover.toFixed(1)} s`])
  const killed = yield* settled(["r2", "r3"], "r1 SIGKILLed: its streams streaming on r2 and r3")
  phases.push(["… then balanced over r2, r3 (the rebalance delay)", `+${killed.seconds.toFixed(1)} s; ${killed.counts.join("/")}`])

  phase = "join"
  yield* startRunner("r4")
  const joined = yield* settled(["r2", "r3", "r4"], "r4 joined: ±1 over three")
  phases.push(["r4 joins: balanced over r2, r3, r4", `${joined.seconds.toFixed(1)} s; ${joined.counts.join("/")}`])

  phase = "control partition"
  yield* r2.control.setMode("blackhole")
  const cut = yield* settled(["r3", "r4"], "r2 cut from the control database: its streams on r3 and r4")
  phases.push([`r2 cut from the control database (${partitionSeconds} s): its streams move`, `${cut.seconds.toFixed(1)} s; ${cut.counts.join("/")}`])
  yield* Effect.sleep(`${Math.max(0, partitionSeconds - cut.seconds)} seconds`)
  phase = "control healed"
  yield* r2.control.setMode("pass")
  const healed = yield* settled(["r2", "r3", "r4"], "r2 healed: ±1 over three")
  phases.push(["r2 healed: balanced again", `${healed.seconds.toFixed(1)} s; ${healed.counts.join("/")}`])

  const before = yield* streaming
  const r3Streams = ids.filter((id) => before.get(id)?.[0] === "r3")
  phase = "stream-database partition"
  for (const p of r3.streams) yield* p.setMode("blackhole")
  yield* Effect.sleep(`${partitionSeconds} seconds`)
  const during = yield* streaming
  const elsewhere = r3Streams.filter((id) => (during.get(id) ?? []).some((i) => i !== "r3")).length
  phases.push([`r3 cut from the stream databases (${partitionSeconds} s)`, `${r3Streams.length} streams placed on r3; ${elsewhere} of them streaming elsewhere meanwhile`])
  phase = "stream databases healed"
  for (const p of r3.streams) yield* p.setMode("pass")
  const back = yield* settled(["r2", "r3", "r4"], "r3 healed: every stream streaming once again")
  phases.push(["r3 healed: every stream streaming once", `${back.seconds.toFixed(1)} s; ${back.counts.join("/")}`])

  yield* Fiber.interrupt(writer)
  const last = committed
  const got = () => {
    const by = new Map<string, Set<number>>()
    for (const r of receiver.requests) {
      if (r.status !== 200) continue
      for (const l of r.lines) {
        const row = l.new as { id?: number } | undefined
        if (l.type === "change" && row?.id !== undefined) by.set(r.stream, (by.get(r.stream) ?? new Set()).add(row.id))
      }
    }
    return by
  }
  // (a timeout is a defect of Wait's: caught, the verdict says what is missing)
  yield* Effect.exit(Wait.eventually(Effect.sync(() => (ids.every((id) => (got().get(id)?.size ?? 0) >= last) ? true : undefined)), 120_000, "every committed row accepted", 500))
  const accepted = got()
  const rows = ids.map((id) => {
    const mine = receiver.requests.filter((r) => r.stream === id)
    let top = 0
    let firstOfTop = Number.POSITIVE_INFINITY
    let late = 0
    for (const r of mine.filter((r) => r.status === 200)) {
      if (r.epoch > top) {
        top = r.epoch
        firstOfTop = r.at
      } else if (r.epoch < top && r.at > firstOfTop) late++
    }
    const set = accepted.get(id) ?? new Set()
    return { id, committed: last, lost: Array.from({ length: last }, (_, i) => i + 1).filter((n) => !set.has(n)).length, late, refused: mine.filter((r) => r.status === 409).length, owners: new Set(mine.filter((r) => r.status === 200).map((r) => r.epoch)).size, twice: twice.get(id) ?? 0 }
  })
  const sum = (k: "lost" | "late" | "refused" | "twice") => rows.reduce((n, r) => n + r[k], 0)
  const report = [
    "# Fleet soak",
    "",
    `Generated by \`node scripts/toolchain.mjs run scripts/fleet-soak.ts\` on ${new Date().toISOString().slice(0, 10)}: ${count} streams (${count - second} on one PostgreSQL 18 server with the control database, ${second} on a second), a row committed into each every 100 ms, every stream's sink one fencing receiver; runners are \`slotkeeper fleet\` processes on this machine, each behind its own fault proxies.`,
    "",
    "| phase | result |",
    "|---|---|",
    ...phases.map(([p, r]) => `| ${p} | ${r} |`),
    "",
    `| rows committed per stream | lost | stale batches accepted (receiver) | late batches accepted | deposed owners' batches refused (409) | samples with a stream streaming from two runners |`,
    "|---|---|---|---|---|---|",
    `| ${last} | ${sum("lost")} | ${receiver.staleAccepted()} | ${sum("late")} | ${sum("refused")} | ${sum("twice")} |`,
    "",
    `Samples of a stream seen streaming from two runners at once in \`pg_stat_replication\`, by phase: ${twiceByPhase.size === 0 ? "none" : [...twiceByPhase].map(([p, n]) => `${p} ${n}`).join(", ")}; the longest run of consecutive samples (250 ms apart) for one stream: ${longestRun}.`,
    "",
    `Owners (epochs) per stream: ${[...new Set(rows.map((r) => r.owners))].sort((x, y) => x - y).join(", ")} distinct counts over the streams.`
  ].join("\n")
  process.stdout.write(`${report}\n`)
  writeFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "docs", "fleet-soak.md"), `${report}\n`)
  // the verdict is out: the clean-up (servers, proxies, receiver) gets a minute, then the process exits
  setTimeout(() => process.exit(), 60_000).unref()
  // the verdict: nothing lost, no stale or late batch accepted, and no stream seen streaming from two runners for a
  // second or more (one sample is the old owner's walsender still exiting on the server after its client closed the
  // connection and released the lock: the owned work is stopped before ownership is released)
  if (sum("lost") > 0 || sum("late") > 0 || receiver.staleAccepted() > 0 || longestRun >= 4) {
    log(`FAILED: ${JSON.stringify(rows.filter((r) => r.lost > 0 || r.late > 0 || r.twice > 0))}`)
    for (const r of rows.filter((r) => r.lost > 0)) {
      const set = accepted.get(r.id) ?? new Set()
      const missing = Array.from({ length: last }, (_, i) => i + 1).filter((n) => !set.has(n))
      const requests = receiver.requests.filter((q) => q.stream === r.id)
      log(`${r.id}: missing ${missing.slice(0, 5).join(",")}..${missing.at(-1)} (${missing.length}); last request ${JSON.stringify(requests.slice(-1).map((q) => ({ at: Math.round(q.at), epoch: q.epoch, status: q.status, lines: q.lines.length })))}; now ${Math.round(performance.now())}`)
    }
    for (const r of runners) writeFileSync(join(tmpdir(), `fleet-soak-${r.name}.log`), r.stderr())
    log(`the runners' logs: ${join(tmpdir(), "fleet-soak-<runner>.log")}`)
    process.exitCode = 1
  }
}))

await Effect.runPromise(program)
