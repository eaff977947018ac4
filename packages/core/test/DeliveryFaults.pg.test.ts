import { FaultProxy, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { eventually } from "./ownership-helpers.ts"
import { checkAll, deliveredAtLeast, deliveredCount, recordingConsumer, startWriter } from "./fault-helpers.ts"

const prepare = Effect.gen(function*() {
  const pg = yield* PgCluster.make({ major: 18 })
  yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
  yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
  return pg
})

/** Runs the writer and the consumer through `fault`, then checks: nothing lost, nothing acknowledged twice. */
const throughFault = (fault: (pg: Effect.Success<typeof prepare>, proxy: FaultProxy.FaultProxy) => Effect.Effect<void, unknown>) =>
  Effect.gen(function*() {
    const pg = yield* prepare
    const proxy = yield* FaultProxy.make({ targetPort: pg.port })
    const consumer = yield* recordingConsumer("a", pg.urlWith({ port: proxy.port }))
    // changes committed before the stream's slot exists are not the stream's
    yield* eventually(Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
    const writer = yield* Effect.forkScoped(startWriter(pg).pipe(Effect.andThen(Effect.never)))
    yield* deliveredAtLeast(consumer, 50)
    yield* fault(pg, proxy)
    const before = deliveredCount(consumer)
    yield* deliveredAtLeast(consumer, before + 50, 60_000) // delivering again after the fault
    yield* Fiber.interrupt(writer)
    const { committed, report } = yield* checkAll(pg, consumer)
    if (!report.ok) console.log("SAMPLE", JSON.stringify(consumer.delivered.filter((d) => d.key === 60).map((d) => [d.session, d.endLsn.toString(16)])))
    if (!report.ok) console.log("REPORT", JSON.stringify({ lost: report.lost.slice(0, 20), lostCount: report.lost.length, dup: report.duplicatedAfterAcknowledgement.slice(0, 20), committed: committed.length, delivered: consumer.delivered.length, sessions: [...consumer.sessionStarts].map(([k, v]) => [k, v.toString(16)]) }))
    assert.deepStrictEqual({ lost: report.lost, duplicatedAfterAcknowledgement: report.duplicatedAfterAcknowledgement }, { lost: [], duplicatedAfterAcknowledgement: [] })
    assert.isAbove(committed.length, 100)
    return report
  })

describe("Delivery through faults (real PostgreSQL 18): every committed change at least once, no acknowledged one twice", () => {
  it.live("server restart", () => Effect.asVoid(throughFault((pg) => pg.restart)))
  it.live("server crash (SIGKILL of every server process, crash recovery)", () => Effect.asVoid(throughFault((pg) => pg.crash)))
  it.live("connection reset", () =>
    Effect.asVoid(throughFault((_pg, proxy) => Effect.andThen(proxy.setMode("reset"), Effect.andThen(Effect.sleep("300 millis"), proxy.setMode("pass"))))))
  it.live("blackhole (a half-open path for 3 s)", () =>
    Effect.asVoid(throughFault((_pg, proxy) => Effect.andThen(proxy.setMode("blackhole"), Effect.andThen(Effect.sleep("3 seconds"), proxy.setMode("pass"))))))
})
