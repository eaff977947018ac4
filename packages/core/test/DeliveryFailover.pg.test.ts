import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { checkAll, deliveredCount, recordingConsumer, streamingWithSyncedStandby } from "./fault-helpers.ts"


describe("Delivery across a failover (real PostgreSQL 18, failover slot synchronized to a standby)", () => {
  it.live("writes throughout, fail over, write: resumed on the promoted standby from the synchronized slot; nothing lost, nothing acknowledged twice (DeliveryCheck)", () =>
    Effect.gen(function*() {
      const { primary, standby, a, writing } = yield* streamingWithSyncedStandby(60) // the failover happens in the middle of delivery
      yield* primary.stop // the writer's inserts fail from here on
      yield* Fiber.interrupt(writing)
      yield* standby.promote
      const b = yield* recordingConsumer("b", standby.url, { firstSession: 1001 })
      const before = (yield* standby.query<{ n: number }>("SELECT max(id) AS n FROM items"))[0]!.n
      yield* standby.query(`INSERT INTO items SELECT g, 'after the promotion' FROM generate_series(${before + 1}, ${before + 20}) g`)
      // every row the new primary has (the truth after a failover), delivered by a or b; nothing durably acknowledged twice
      const both = {
        ...b,
        get delivered() {
          return [...a.delivered, ...b.delivered]
        },
        get sessionStarts() {
          return new Map([...a.sessionStarts, ...b.sessionStarts])
        }
      }
      const { committed, report } = yield* checkAll(standby, both)
      assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
      assert.isAtLeast(committed.length, 80)
      console.log(`failover: ${committed.length} rows, a delivered ${deliveredCount(a)}, b started at ${Math.min(...b.delivered.map((d) => d.key))}, ${report.redelivered} redelivered`)
    }))
})
