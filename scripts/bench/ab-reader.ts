/**
 * One reader of `ab.ts`: the `@slotkeeper/core` of the checkout at ROOT, consuming stream STREAM in-process until a
 * commit ends at or after END_LSN (`setup` only makes the stream's slot). Prints one JSON line.
 *
 *   ROOT=/path/to/checkout node scripts/bench/ab-reader.ts setup|run URL STREAM [END_LSN]
 */
import { Deferred, Effect, Fiber, Redacted, Stream, SubscriptionRef } from "effect"

const [mode, url, streamId, endText] = process.argv.slice(2) as [string, string, string, string | undefined]
const root = process.env.ROOT!
// the checkout's own modules, whatever its version: loaded by path, typed loosely
const Lsn = await import(`${root}/packages/core/src/Lsn.ts`)
const StreamOwnership = await import(`${root}/packages/core/src/ownership/StreamOwnership.ts`)
const Delivery = await import(`${root}/packages/core/src/replication/Delivery.ts`)
const SlotManager = await import(`${root}/packages/core/src/slot/SlotManager.ts`)
const end: bigint = endText === undefined ? 0n : Lsn.parseUnsafe(endText)
const options = { streamId, slotPrefix: `ab_${streamId}`, schema: "slotkeeper", publication: "bench", url: Redacted.make(url), instanceId: "ab" } as const
const begun = performance.now()
let firstChange = 0

const program = Effect.scoped(Effect.gen(function*() {
  const ownership = yield* StreamOwnership.make({ ...options, mode: "advisory" })
  const state = yield* SlotManager.makeState
  const done = yield* Deferred.make<number>()
  let rows = 0
  const owned = Delivery.run({ ...options, sql: ownership.sql }, (connection: any) =>
    Stream.runForEach(connection.events, (event: any) => {
      if (event._tag === "Change") {
        if (rows++ === 0) firstChange = performance.now()
        return Effect.void
      }
      if (event._tag !== "Commit") return Effect.void
      return Effect.andThen(connection.acknowledge(event.endLsn), event.endLsn >= end ? Deferred.succeed(done, rows) : Effect.void)
    }), state)
  const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
  if (mode === "setup") {
    while ((yield* SubscriptionRef.get(state.slot)) === undefined) yield* Effect.sleep("50 millis")
    return yield* Fiber.interrupt(fiber)
  }
  const n = yield* Deferred.await(done)
  const cpu = process.cpuUsage()
  console.log(JSON.stringify({
    rows: n,
    ms: Math.round(performance.now() - begun),
    firstChangeMs: Math.round(firstChange - begun),
    userMs: Math.round(cpu.user / 1000),
    sysMs: Math.round(cpu.system / 1000),
    rssMB: Math.round(process.resourceUsage().maxRSS / 1024)
  }))
}))

await Effect.runPromise(program as Effect.Effect<void, unknown>)
process.exit(0)
