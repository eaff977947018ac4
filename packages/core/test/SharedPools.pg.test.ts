/**
 * SharedPools against real PostgreSQL: the streams of one process and one database share one pool for their guarded
 * writes, each keeping its own lock session; fencing is unchanged (a deposed stream's guarded write is refused while
 * another stream on the same pool writes); the last stream to stop closes the pool.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import * as SharedPools from "../src/connection/SharedPools.ts"
import { activeOf, eventually, fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

const timing = fastTiming.advisory

/** The server's sessions by `application_name` (`pg_stat_activity`). */
const sessions = (pg: Effect.Success<ReturnType<typeof PgCluster.make>>, like: string) =>
  Effect.map(
    pg.query(`SELECT application_name AS name FROM pg_stat_activity WHERE application_name LIKE '${like}' ORDER BY 1`),
    (rows) => (rows as Array<{ name: string }>).map((r) => r.name)
  )

describe("SharedPools (real PostgreSQL)", () => {
  it.live("five streams of one database share one pool of 3 sessions, each with its own lock session; all their guarded writes land", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE fenced (stream text, n int)")
      const pools = yield* SharedPools.make({ instanceId: "r1", maxConnections: 3 })
      const intervals: Array<Interval> = []
      const ids = ["s1", "s2", "s3", "s4", "s5"]
      const streams = yield* Effect.forEach(ids, (id) => startInstance("r1", pg.url, intervals, { ...timing, streamId: id, pools }))
      const owners = yield* Effect.forEach(streams, (s) => Deferred.await(s.firstHold))
      assert.deepStrictEqual(yield* pools.open, [5])
      // 20 guarded writes per stream, all streams at once: more transactions than pooled sessions
      yield* Effect.forEach(owners, (own, i) =>
        Effect.forEach(Array.from({ length: 20 }, (_, n) => n), (n) =>
          own.guarded(streams[i]!.ownership.sql`INSERT INTO fenced VALUES (${ids[i]!}, ${n})`), { concurrency: 4, discard: true }), { concurrency: "unbounded", discard: true })
      assert.deepStrictEqual(yield* pg.query("SELECT stream, count(*)::int AS n FROM fenced GROUP BY 1 ORDER BY 1"), ids.map((id) => ({ stream: id, n: 20 })))
      const pooled = yield* sessions(pg, "slotkeeper:%:r1:guard")
      assert.isAtLeast(pooled.length, 1)
      assert.isAtMost(pooled.length, 3, JSON.stringify(pooled))
      assert.deepStrictEqual([...new Set(pooled)], [SharedPools.applicationName("r1")])
      assert.deepStrictEqual(yield* sessions(pg, "slotkeeper:%:r1:lock"), ids.map((id) => `slotkeeper:${id}:r1:lock`))
      assert.strictEqual(streams[0]!.ownership.poolApplicationName, "slotkeeper:*:r1:guard")
    }))

  it.live("fencing on a shared pool: a deposed stream's guarded write is refused and changes nothing, while another stream on the same pool writes", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE fenced (note text)")
      const r1 = yield* SharedPools.make({ instanceId: "r1" })
      const r2 = yield* SharedPools.make({ instanceId: "r2" })
      const intervals: Array<Interval> = []
      const s1 = yield* startInstance("r1", pg.url, intervals, { ...timing, streamId: "s1", pools: r1 })
      const s2 = yield* startInstance("r1", pg.url, intervals, { ...timing, streamId: "s2", pools: r1 })
      const stale = yield* Deferred.await(s1.firstHold)
      const other = yield* Deferred.await(s2.firstHold)
      assert.strictEqual(s1.ownership.sql, s2.ownership.sql, "one pool")
      yield* stale.guarded(s1.ownership.sql`INSERT INTO fenced VALUES ('s1 by r1 while owner')`)
      // r2 competes for s1; r1's s1 goes away without releasing, r2 takes over and bumps the epoch
      yield* startInstance("r2", pg.url, intervals, { ...timing, streamId: "s1", pools: r2 })
      yield* Fiber.interrupt(s1.fiber)
      yield* eventually(Effect.sync(() => intervals.find((i) => i.instance === "r2" && i.end === undefined)), 10_000, "r2 owns s1")
      // r1's captured guard of s1, on the pool r1's s2 still uses
      const refused = yield* Effect.flip(stale.guarded(s1.ownership.sql`INSERT INTO fenced VALUES ('s1 by r1 as a zombie')`))
      assert.strictEqual(refused._tag, "OwnershipLost")
      yield* other.guarded(s2.ownership.sql`INSERT INTO fenced VALUES ('s2 by r1')`)
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM fenced ORDER BY note"), [{ note: "s1 by r1 while owner" }, { note: "s2 by r1" }])
      assert.isDefined(yield* activeOf(intervals, "r1"), "r1 still owns s2")
    }))

  it.live("the last stream to stop closes the pool (its sessions leave the server); a stream started afterwards gets a new one", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const pools = yield* SharedPools.make({ instanceId: "r1" })
      const intervals: Array<Interval> = []
      const scopes = yield* Effect.forEach(["s1", "s2"], () => Scope.make())
      const streams = yield* Effect.forEach(["s1", "s2"], (id, i) =>
        Scope.provide(scopes[i]!)(startInstance("r1", pg.url, intervals, { ...timing, streamId: id, pools })))
      yield* Effect.forEach(streams, (s) => Deferred.await(s.firstHold))
      yield* streams[0]!.ownership.sql`SELECT 1`
      assert.deepStrictEqual(yield* pools.open, [2])
      yield* Scope.close(scopes[0]!, Exit.void)
      assert.deepStrictEqual(yield* pools.open, [1])
      assert.isNotEmpty(yield* sessions(pg, "slotkeeper:*:r1:guard"))
      yield* Scope.close(scopes[1]!, Exit.void)
      assert.deepStrictEqual(yield* pools.open, [])
      yield* eventually(Effect.map(sessions(pg, "slotkeeper:*:r1:guard"), (found) => found.length === 0 ? true : undefined), 5_000, "the pooled sessions gone")
      const again = yield* startInstance("r1", pg.url, intervals, { ...timing, streamId: "s3", pools })
      yield* Deferred.await(again.firstHold)
      yield* again.ownership.sql`SELECT 1`
      assert.deepStrictEqual(yield* pools.open, [1])
    }))
})
