import { FaultProxy, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, SubscriptionRef } from "effect"
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
    assert.deepStrictEqual({ lost: report.lost, duplicatedAfterAcknowledgement: report.duplicatedAfterAcknowledgement }, { lost: [], duplicatedAfterAcknowledgement: [] })
    assert.isAtLeast(committed.length, 100) // 50 before the fault, 50 more after it
    return report
  })

describe("Delivery through faults (real PostgreSQL 18): every committed change at least once, no acknowledged one twice", () => {
  it.live("server restart", () => Effect.asVoid(throughFault((pg) => pg.restart)))
  it.live("server crash (SIGKILL of every server process, crash recovery)", () => Effect.asVoid(throughFault((pg) => pg.crash)))
  it.live("connection reset", () =>
    Effect.asVoid(throughFault((_pg, proxy) => Effect.andThen(proxy.setMode("reset"), Effect.andThen(Effect.sleep("300 millis"), proxy.setMode("pass"))))))
  it.live("blackhole (a half-open path for 3 s)", () =>
    Effect.asVoid(throughFault((_pg, proxy) => Effect.andThen(proxy.setMode("blackhole"), Effect.andThen(Effect.sleep("3 seconds"), proxy.setMode("pass"))))))

  it.live("publication dropped behind slotkeeper's back: the gap is lost by PostgreSQL and reported as a resync; re-created, delivery goes on", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const consumer = yield* recordingConsumer("a", pg.url, { publicationDrift: "200 millis" })
      yield* eventually(Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
      const writer = yield* Effect.forkScoped(startWriter(pg).pipe(Effect.andThen(Effect.never)))
      yield* deliveredAtLeast(consumer, 50)
      yield* pg.query("DROP PUBLICATION slotkeeper_orders")
      const status = yield* eventually(Effect.map(SubscriptionRef.get(consumer.managers[0]!.status), (s) => s.resyncRequired), 20_000, "the drop detected")
      assert.match(status, /dropped behind slotkeeper's back/)
      const before = deliveredCount(consumer)
      yield* deliveredAtLeast(consumer, before + 50, 60_000)
      yield* Fiber.interrupt(writer)
      const { committed, report } = yield* checkAll(pg, consumer, 10_000)
      // PostgreSQL 18 skips a missing publication silently: what was committed while it was gone is lost to the
      // stream — one contiguous gap, reported above as a resync; everything before and after is delivered
      assert.deepStrictEqual(report.duplicatedAfterAcknowledgement, [])
      assert.isAbove(report.lost.length, 0)
      assert.deepStrictEqual(report.lost, Array.from({ length: report.lost.length }, (_, i) => report.lost[0]! + i))
      assert.isAbove(committed.at(-1)!, report.lost.at(-1)! + 40)
    }))

  it.live("slot dropped behind slotkeeper's back: the owned work fails with SlotMissing and says what was lost; nothing acknowledged repeats", () =>
    Effect.gen(function*() {
      const pg = yield* prepare
      const consumer = yield* recordingConsumer("a", pg.url)
      yield* eventually(Effect.map(pg.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
      yield* Effect.forkScoped(startWriter(pg).pipe(Effect.andThen(Effect.never)))
      yield* deliveredAtLeast(consumer, 50)
      yield* pg.query("SELECT pg_drop_replication_slot('slotkeeper_orders_1')")
      const exit = yield* Fiber.await(consumer.fiber)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.include(error, { _tag: "SlotError", reason: "SlotMissing" })
      assert.match((error as { message: string }).message, /no longer exists|does not exist/)
      assert.match((error as { message: string }).message, /consumers need a resync/)
      const { report } = yield* checkAll(pg, consumer, 1_000)
      assert.deepStrictEqual(report.duplicatedAfterAcknowledgement, [])
    }))
})
