/**
 * Times the test kit: how long a test waits for a cluster, a restart, a crash recovery and a standby.
 *
 *   npm run bench:testkit               # PostgreSQL 18 and 15, 5 rounds each
 *   ROUNDS=10 MAJORS=18 npm run bench:testkit
 *
 * Prints median / min / max wall-clock milliseconds per operation. Each round uses fresh servers, removed afterwards.
 */
import { Effect } from "effect"
import { Leftovers, PgCluster, Standby } from "@slotkeeper/testkit"

const rounds = Number(process.env.ROUNDS ?? 5)
const majors = (process.env.MAJORS ?? "18,15").split(",").map(Number)

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const started = performance.now()
    const a = yield* effect
    return [a, performance.now() - started] as const
  })

const stats = (xs: Array<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
  return `${median.toFixed(0).padStart(6)} ${s[0]!.toFixed(0).padStart(6)} ${s.at(-1)!.toFixed(0).padStart(6)}`
}

const program = Effect.gen(function*() {
  console.log(`rounds=${rounds}, cores=${cores()}, node ${process.version}`)
  console.log("operation                           median    min    max   (ms)")
  for (const major of majors) {
    const samples: Record<string, Array<number>> = { start: [], restart: [], crash: [], standby: [], promote: [] }
    for (let i = 0; i < rounds; i++) {
      yield* Effect.scoped(Effect.gen(function*() {
        const [primary, start] = yield* timed(PgCluster.make({ major }))
        samples.start!.push(start)
        samples.restart!.push((yield* timed(primary.restart))[1])
        yield* primary.query("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
        samples.crash!.push((yield* timed(primary.crash))[1])
        const [standby, standbyMs] = yield* timed(Standby.make(primary))
        samples.standby!.push(standbyMs)
        samples.promote!.push((yield* timed(standby.promote))[1])
      }))
    }
    const label = (op: string) => `PG ${major} ${op}`.padEnd(34)
    console.log(`${label("cluster start (initdb + ready)")}${stats(samples.start!)}`)
    console.log(`${label("restart (fast stop + start)")}${stats(samples.restart!)}`)
    console.log(`${label("crash (SIGKILL + recovery)")}${stats(samples.crash!)}`)
    console.log(`${label("standby (copy + streaming)")}${stats(samples.standby!)}`)
    console.log(`${label("promote")}${stats(samples.promote!)}`)
  }
})

function cores() {
  return (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? "?"
}

await Effect.runPromise(program)
Leftovers.removeRun(Leftovers.runId())
