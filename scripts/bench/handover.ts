/**
 * Handover, as users see it: two `slotkeeper run` processes (default timings) on one stream, a writer committing one
 * row every 10 ms, and the owner stopped gracefully (SIGTERM: a rolling deploy), killed (SIGKILL) or cut off (its
 * connections go through a FaultProxy that starts to swallow everything: a half-open partition). Measured, in both
 * lock modes: the time from the event to the second instance's first delivered change, and the longest gap between
 * two new rows arriving at either process (the outage as a consumer sees it; rows come every 10 ms otherwise).
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Fiber, Layer, Redacted, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { FaultProxy, PgCluster, Wait } from "@slotkeeper/testkit"
import { ids, type Running, start, streaming } from "../../packages/cli/test/cli-helpers.ts"
import { cell, table } from "./stats.ts"

/** When each row id first arrived at `r` (`performance.now()`). */
const firstArrivals = (r: Running) => {
  const arrived = new Map<number, number>()
  r.lines.forEach((l, i) => {
    if (l.type !== "change") return
    const id = Number((l.new as { id: number }).id)
    if (!arrived.has(id)) arrived.set(id, r.arrivedAt[i]!)
  })
  return arrived
}

const instance = (name: string, url: string, lock: string) =>
  start(["--database-url", url, "--table", "items", "--instance-id", name, "--lock", lock])

export type Fault = "graceful" | "crash" | "pause" | "partition"

const round = (lock: "advisory" | "lease", fault: Fault) =>
  Effect.scoped(Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY)")
    const proxy = yield* FaultProxy.make({ targetPort: pg.port })
    const a = yield* instance("a", pg.urlWith({ host: proxy.host, port: proxy.port }), lock)
    yield* streaming(pg)
    const b = yield* instance("b", pg.url, lock)
    yield* Wait.eventually(Effect.sync(() => (/competing for ownership/.test(b.stderr()) ? true : undefined)), 30_000, "b waiting")
    const sql = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(pg.url) })), SqlClient.SqlClient)
    let next = 1
    const writer = yield* Effect.forkScoped(
      Effect.suspend(() => sql.unsafe(`INSERT INTO items VALUES (${next})`).pipe(Effect.tap(() => Effect.sync(() => next++)), Effect.ignore)).pipe(
        Effect.repeat(Schedule.spaced("10 millis"))
      )
    )
    yield* Wait.eventually(Effect.sync(() => (ids(a).length >= 100 ? true : undefined)), 30_000, "a delivering")
    const t0 = performance.now()
    if (fault === "graceful") a.child.kill("SIGTERM")
    if (fault === "crash") a.child.kill("SIGKILL")
    if (fault === "pause") {
      // frozen (a long GC pause, a throttled container): its sessions stay open and silent
      a.child.kill("SIGSTOP")
      yield* Effect.addFinalizer(() => Effect.sync(() => a.child.kill("SIGCONT")))
    }
    if (fault === "partition") yield* proxy.setMode("blackhole")
    const first = yield* Wait.eventually(Effect.sync(() => b.arrivedAt[0]), 60_000, "b delivering")
    // two more seconds of steady delivery by b, then every row written must have arrived somewhere
    yield* Effect.sleep("2 seconds")
    // woken, the old owner finds its deadline passed and writes nothing more
    if (fault === "pause") a.child.kill("SIGCONT")
    yield* Fiber.interrupt(writer)
    const written = next - 1
    yield* Wait.eventually(Effect.sync(() => {
      const delivered = new Set([...ids(a), ...ids(b)])
      for (let id = 1; id <= written; id++) if (!delivered.has(id)) return undefined
      return true
    }), 60_000, "every row delivered")
    // the outage: the longest wait between new rows arriving, from a second before the event on
    const [fromA, fromB] = [firstArrivals(a), firstArrivals(b)]
    const arrivals = [...new Set([...fromA.keys(), ...fromB.keys()])]
      .map((id) => Math.min(fromA.get(id) ?? Infinity, fromB.get(id) ?? Infinity))
      .filter((t) => t >= t0 - 1000)
      .sort((x, y) => x - y)
    let gap = 0
    for (let i = 1; i < arrivals.length; i++) gap = Math.max(gap, arrivals[i]! - arrivals[i - 1]!)
    return { takeover: first - t0, gap }
  }))

export interface HandoverResult {
  readonly lock: "advisory" | "lease"
  readonly fault: Fault
  /** Event → the second instance's first change, per run (ms). */
  readonly takeovers: ReadonlyArray<number>
}

export const report = (runs: number, log: (text: string) => void) =>
  Effect.gen(function*() {
    const rows: Array<Array<string>> = []
    const results: Array<HandoverResult> = []
    for (const lock of ["advisory", "lease"] as const) {
      for (const fault of ["graceful", "crash", "pause", "partition"] as const) {
        const takeovers: Array<number> = []
        const gaps: Array<number> = []
        for (let i = 1; i <= runs; i++) {
          log(`handover: ${lock}, ${fault}, run ${i} of ${runs}`)
          const r = yield* round(lock, fault)
          takeovers.push(r.takeover)
          gaps.push(r.gap)
        }
        const event = { graceful: "SIGTERM (rolling deploy)", crash: "SIGKILL", pause: "process paused (SIGSTOP)", partition: "half-open partition" }[fault]
        rows.push([lock, event, cell(takeovers), cell(gaps)])
        results.push({ lock, fault, takeovers })
      }
    }
    const text = `## Handover\n\nTwo \`slotkeeper run\` processes with the default timings (advisory: heartbeat 500 ms, loss deadline 2 s, server release bound 4 s; lease: 4 s, renewed every 1 s; waiting instances poll every 500 ms and try at once when a release is announced), a writer committing a row every 10 ms. Milliseconds, median (min–max) of ${runs} runs.\n\n${
      table(["lock", "event", "event → second instance's first change", "longest gap in delivery"], rows)
    }\n\nA killed owner's lock session ends with its process (advisory), while a lease runs out. After a pause or a partition the old owner's sessions stay open and silent: the server ends the lock session at its release bound (4 s), or the lease runs out (4 s), and the other instance takes over then — the gap is that bound, by design; the old owner stops acting at its loss deadline (2 s), or, paused, refuses to act the moment it wakes past it.`
    return { text, results }
  })
