/**
 * One reader of the stream benchmark, in a process of its own (so that its peak RSS is its own). Reads from its own
 * slot until a commit ends at or after END_LSN, then prints one JSON line: rows and peak memory (the caller times it, from spawn to exit).
 *
 *   node scripts/bench/reader.ts setup      URL           # creates slotkeeper's stream slot, then exits
 *   node scripts/bench/reader.ts slotkeeper URL END_LSN    # @slotkeeper/core Delivery, consumed in-process
 *   node scripts/bench/reader.ts raw        URL END_LSN    # pg-logical-replication, counting messages only
 */
import { Deferred, Effect, Fiber, Redacted, Stream, SubscriptionRef } from "effect"
import { LogicalReplicationService, PgoutputPlugin } from "pg-logical-replication"
import * as Lsn from "../../packages/core/src/Lsn.ts"
import * as StreamOwnership from "../../packages/core/src/ownership/StreamOwnership.ts"
import * as Delivery from "../../packages/core/src/replication/Delivery.ts"
import * as SlotManager from "../../packages/core/src/slot/SlotManager.ts"

const [mode, url, endText] = process.argv.slice(2) as [string, string, string | undefined]
const end = endText === undefined ? 0n : Lsn.parseUnsafe(endText)
const options = {
  streamId: "bench",
  slotPrefix: "slotkeeper_bench",
  schema: "slotkeeper",
  publication: "bench",
  url: Redacted.make(url),
  instanceId: "bench"
} as const

// the largest heap and off-heap (Buffer) use seen, sampled: what the peak RSS is made of
const peak = { heapUsedMB: 0, externalMB: 0 }
setInterval(() => {
  const m = process.memoryUsage()
  peak.heapUsedMB = Math.max(peak.heapUsedMB, Math.round(m.heapUsed / 2 ** 20))
  peak.externalMB = Math.max(peak.externalMB, Math.round(m.external / 2 ** 20))
}, 100).unref()

// rows and memory, and when the first change came (ms since this process started: for a one-transaction workload,
// when its commit reached the reader); the orchestrator times each reader from spawn to exit
let firstChangeMs: number | undefined
const report = (rows: number) =>
  console.log(JSON.stringify({ rows, maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024), firstChangeMs: firstChangeMs === undefined ? undefined : Math.round(firstChangeMs), ...peak }))

const slotkeeper = (setupOnly: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ ...options, mode: "advisory" })
    const state = yield* SlotManager.makeState
    const done = yield* Deferred.make<number>()
    let rows = 0
    const owned = Delivery.run({ ...options, sql: ownership.sql }, (connection) =>
      Stream.runForEach(connection.events, (event) => {
        if (event._tag === "Change") {
          if (rows++ === 0) firstChangeMs = performance.now()
          return Effect.void
        }
        if (event._tag !== "Commit") return Effect.void
        return Effect.andThen(connection.acknowledge(event.endLsn), event.endLsn >= end ? Deferred.succeed(done, rows) : Effect.void)
      }), state)
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    if (setupOnly) {
      while ((yield* SubscriptionRef.get(state.slot)) === undefined) yield* Effect.sleep("50 millis")
      return yield* Fiber.interrupt(fiber)
    }
    const n = yield* Deferred.await(done)
    report(n)
  }))

const raw = () =>
  new Promise<void>((resolve, reject) => {
    const service = new LogicalReplicationService({ connectionString: url }, { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } })
    let rows = 0
    service.on("data", (_lsn: string, message: { tag: string; commitEndLsn?: string | null }) => {
      if (message.tag === "insert") rows++
      else if (message.tag === "commit" && Lsn.parseUnsafe(message.commitEndLsn ?? "0/0") >= end) {
        report(rows)
        service.destroy().then(() => resolve(), reject)
      }
    })
    service.on("error", reject)
    service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ["bench"] }), "bench_raw", "0/0").catch(() => {})
  })

if (mode === "setup") await Effect.runPromise(slotkeeper(true))
else if (mode === "slotkeeper") await Effect.runPromise(slotkeeper(false))
else if (mode === "raw") await raw()
else throw new Error(`unknown mode ${mode}`)
process.exit(0)
