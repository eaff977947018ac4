/**
 * The stream is read only from the server ownership is held on: a primary fails and its address (a FaultProxy, as a
 * virtual IP or a DNS name would) moves to the promoted standby. The holder's lock session died with the old primary,
 * but it learns that only at its next heartbeat; its replication connection reconnects at once — to the new server.
 * It must not stream from there under the old ownership.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { checkAll, deliveredAtLeast, streamingWithSyncedStandby } from "./fault-helpers.ts"

// A heartbeat slow enough that the replication connection reconnects long before the holder notices the dead lock
// session: the window in which the old holder could stream from the new server.
const slowHeartbeat = {
  mode: "advisory",
  heartbeatInterval: "4 seconds",
  lossDeadline: "9 seconds",
  serverReleaseBound: "12 seconds",
  safetyMargin: "2 seconds",
  acquireInterval: "100 millis"
} as const

describe("Fencing to the server (real PostgreSQL 18, a moving address)", () => {
  it.live("advisory: the address moves to the promoted standby before the holder's next heartbeat; the old holding never streams from the new server, the instance takes the stream there with a new epoch, nothing is lost", () =>
    Effect.gen(function*() {
      const { a, primary, proxy, standby, writing } = yield* streamingWithSyncedStandby(30, { throughProxy: true, ownership: slowHeartbeat })
      yield* Fiber.interrupt(writing)
      const firstEpoch = a.delivered[0]!.epoch
      const beforeFailover = new Set(a.delivered.map((d) => d.key))
      // the primary fails (every connection to it reset), the standby is promoted, the address moves to it
      yield* proxy!.setMode("reset")
      yield* primary.stop
      yield* standby.promote
      yield* proxy!.setTarget(standby.port)
      yield* proxy!.setMode("pass")
      const [top] = yield* standby.query<{ n: number }>("SELECT coalesce(max(id), 0) AS n FROM items")
      for (let id = top!.n + 1; id <= top!.n + 20; id++) yield* standby.query(`INSERT INTO items VALUES (${id}, 'after the promotion')`)

      yield* deliveredAtLeast(a, top!.n + 20, 60_000)
      // Every row written on the new server came under a holding acquired there (a newer epoch), none under the old one.
      const afterPromotion = a.delivered.filter((d) => d.key > top!.n)
      assert.deepStrictEqual(afterPromotion.filter((d) => d.epoch <= firstEpoch).map((d) => d.key), [])
      assert.isAbove(Math.min(...afterPromotion.map((d) => d.epoch)), firstEpoch)
      // and the epoch was bumped on the new server, where ownership is now held
      const [row] = yield* standby.query<{ epoch: string }>("SELECT epoch::text AS epoch FROM slotkeeper.ownership WHERE stream_id = 'orders'")
      assert.strictEqual(Number(row!.epoch), Math.max(...a.delivered.map((d) => d.epoch)))
      // nothing the new server has was lost, nothing durably acknowledged was delivered twice
      const { report } = yield* checkAll(standby, a)
      assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
      assert.isAtLeast(beforeFailover.size, 30)
    }))
})
