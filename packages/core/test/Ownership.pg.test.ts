/**
 * Ownership against real PostgreSQL (the test kit), in both lock modes.
 */
import { PgConnection } from "@effect/sql-pg"
import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Redacted } from "effect"
import type { LockMode } from "../src/ownership/OwnershipConfig.ts"
import * as SqlErrors from "../src/internal/sqlError.ts"
import * as StreamId from "../src/StreamId.ts"
import { activeOf, eventually, fastTiming, holderBehindProxy, type Interval, overlaps, startInstance } from "./ownership-helpers.ts"

const modes: ReadonlyArray<LockMode> = ["advisory", "lease"]

describe.each(modes)("Ownership (%s lock, real PostgreSQL)", (mode) => {
  const timing = fastTiming[mode]

  it.live("two instances contend: exactly one is active at every observed moment", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, timing)
      const b = yield* startInstance("b", pg.url, intervals, timing)
      yield* eventually(Effect.sync(() => (intervals.length > 0 ? true : undefined)), 10_000, "an owner")
      for (let i = 0; i < 100; i++) {
        const active = [yield* a.status, yield* b.status].filter((s) => s._tag === "Active").length
        assert.strictEqual(active, 1, `sample ${i}: ${active} instances active`)
        yield* Effect.sleep("20 millis")
      }
      const waiting = [yield* a.status, yield* b.status].find((s) => s._tag === "Waiting")
      const holder = waiting?._tag === "Waiting" ? waiting.holder : undefined
      const owner = intervals[0]!.instance
      assert.strictEqual(holder?.holder, owner)
      assert.strictEqual(holder?.epoch, intervals[0]!.epoch)
      assert.isString(holder?.since)
      if (mode === "advisory") {
        // the waiting status names the holding backend: pid and application_name
        const [row] = yield* pg.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [`slotkeeper:orders:${owner}:lock`])
        assert.strictEqual(holder?.pid, row?.pid)
        assert.strictEqual(holder?.applicationName, `slotkeeper:orders:${owner}:lock`)
      }
      assert.deepStrictEqual(overlaps(intervals), [])
      assert.strictEqual(intervals.length, 1)
    }))

  it.live("graceful release: the other instance is active within 1 s", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, timing)
      yield* Deferred.await(a.firstHold)
      yield* startInstance("b", pg.url, intervals, timing)
      yield* Effect.sleep("300 millis")
      const releasedAt = Date.now()
      yield* Fiber.interrupt(a.fiber)
      const b = yield* eventually(activeOf(intervals, "b"), 5_000, "b active")
      assert.isAtMost(b.start - releasedAt, 1_000)
      assert.strictEqual(b.epoch, intervals[0]!.epoch + 1)
      assert.deepStrictEqual(overlaps(intervals), [])
    }))

  it.live("a graceful release is announced: a waiter that polls only every minute takes over at once", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, timing)
      yield* Deferred.await(a.firstHold)
      // its next poll is 48–72 s after its first attempt: only the release notice can wake it sooner
      const b = yield* startInstance("b", pg.url, intervals, { ...timing, acquireInterval: "60 seconds" })
      yield* eventually(Effect.map(b.status, (s) => (s._tag === "Waiting" ? true : undefined)), 10_000, "b waiting")
      const releasedAt = Date.now()
      yield* Fiber.interrupt(a.fiber)
      const active = yield* eventually(activeOf(intervals, "b"), 30_000, "b active")
      assert.isAtMost(active.start - releasedAt, 5_000)
      assert.strictEqual(active.epoch, intervals[0]!.epoch + 1)
      assert.deepStrictEqual(overlaps(intervals), [])
    }))

  it.live("a path blackholed: the holder gives up within its deadline, the other takes over only after that, within the server bound", () =>
    Effect.gen(function*() {
      const { a, intervals, pg, proxy } = yield* holderBehindProxy(timing)
      yield* startInstance("b", pg.url, intervals, timing)
      yield* Effect.sleep("500 millis")
      const cut = Date.now()
      yield* proxy.setMode("blackhole")
      const b = yield* eventually(activeOf(intervals, "b"), 15_000, "b active")
      const aInterval = intervals.find((i) => i.instance === "a")!
      assert.isDefined(aInterval.end)
      const deadline = a.ownership.config.lossDeadlineMs
      const serverBound = a.ownership.config.serverReleaseBoundMs
      // the holder's detection: at most its deadline after the cut (its last good check started before the cut);
      // the slack covers a late timer on a busy machine
      assert.isAtMost(aInterval.end! - cut, deadline + 500)
      // the other instance: never before the holder gave up, and within the server's bound plus one poll
      assert.isAtLeast(b.start, aInterval.end!)
      assert.isAtMost(b.start - cut, serverBound + 120 + 1_000)
      assert.deepStrictEqual(overlaps(intervals), [])
      yield* proxy.setMode("pass")
    }))

  it.live("a guarded write of an instance that lost ownership is rejected and changes nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE fenced (note text)")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, timing)
      const stale = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      // while it owns the stream, its guarded writes go through
      yield* stale.guarded(sql`INSERT INTO fenced VALUES ('a while owner')`)
      // a goes away without releasing; b takes over (bumping the epoch)
      yield* startInstance("b", pg.url, intervals, timing)
      yield* Fiber.interrupt(a.fiber)
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      // a's captured guard, used as a zombie would use it
      const refused = yield* Effect.flip(stale.guarded(sql`INSERT INTO fenced VALUES ('a as a zombie')`))
      assert.strictEqual(refused._tag, "OwnershipLost")
      assert.match(refused._tag === "OwnershipLost" ? refused.found ?? "" : "", /held by b/)
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM fenced"), [{ note: "a while owner" }])
    }))

  it.live("dependents are interrupted within 100 ms of the loss being detected", () =>
    Effect.gen(function*() {
      const { a, intervals, proxy } = yield* holderBehindProxy(timing)
      yield* proxy.setMode("blackhole")
      const interval = yield* eventually(Effect.sync(() => (intervals[0]?.end !== undefined ? intervals[0] : undefined)), 10_000, "a interrupted")
      const stopping = a.statuses.find((s) => s.status._tag === "Stopping")?.status
      assert.strictEqual(stopping?._tag, "Stopping")
      const detectedAt = stopping?._tag === "Stopping" ? stopping.at : Number.NaN
      assert.isAtLeast(interval.end! - detectedAt, 0)
      assert.isAtMost(interval.end! - detectedAt, 100)
      yield* proxy.setMode("pass")
    }))
})

describe("Ownership (advisory lock, real PostgreSQL): the server side", () => {
  const timing = fastTiming.advisory

  // A terminated lock session releases the lock at that instant, before the holder can know: the other instance may
  // become active up to one heartbeat before the holder notices. What holds from the first instant is the fence: the
  // old holder's writes fail their proof. (Without an outside kill, the server releases only after its bound, which
  // the holder's deadline precedes: see the blackhole test, where active intervals never overlap.)
  it.live("the holder's backend is terminated: its writes are refused at once, it notices within its deadline, the other is active within 1 s", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE fenced (note text)")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, timing)
      const held = yield* Deferred.await(a.firstHold)
      yield* startInstance("b", pg.url, intervals, timing)
      yield* Effect.sleep("300 millis")
      const killedAt = Date.now()
      assert.isTrue(yield* pg.terminateBackend(held.held.pid!))
      // right away, before a's next heartbeat
      const refused = yield* Effect.flip(held.guarded(a.ownership.sql`INSERT INTO fenced VALUES ('after the kill')`))
      assert.strictEqual(refused._tag, "OwnershipLost")
      const b = yield* eventually(activeOf(intervals, "b"), 5_000, "b active")
      const aEnd = yield* eventually(Effect.sync(() => intervals.find((i) => i.instance === "a")?.end), 5_000, "a interrupted")
      assert.isAtMost(aEnd - killedAt, a.ownership.config.lossDeadlineMs)
      assert.isAtMost(b.start - killedAt, 1_000)
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM fenced"), [])
    }))

  it.live("the lock session is tagged and bounded on the server: application_name and idle_session_timeout", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("pod-1", pg.url, intervals, timing)
      const held = yield* Deferred.await(a.firstHold)
      const [row] = yield* pg.query<{ application_name: string }>(
        "SELECT application_name FROM pg_stat_activity WHERE pid = $1", [held.held.pid])
      assert.strictEqual(row?.application_name, "slotkeeper:orders:pod-1:lock")
      const conn = yield* PgConnection.make({ url: Redacted.make(pg.url) })
      const locks = yield* conn.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND pid = $1", [held.held.pid])
      assert.deepStrictEqual(locks.rows, [{ n: 1 }])
      const exit = yield* Effect.exit(Fiber.interrupt(a.fiber))
      assert.isTrue(Exit.isSuccess(exit))
    }))
})

describe("Ownership (advisory lock, real PostgreSQL): the lock breaker", () => {
  it.live("a waiter terminates a holder silent for longer than staleAfter (one without idle_session_timeout), then owns the stream", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const { key, namespace } = StreamId.identity("postgres", "orders").ownershipLock
      // a stale holder: a session of another program holding the stream's lock, with no idle_session_timeout
      const zombie = yield* PgConnection.make({ url: Redacted.make(pg.urlWith({ applicationName: "stale-holder" })) })
      yield* zombie.query("SELECT pg_advisory_lock($1::int4, $2::int4)", [namespace, key])
      const intervals: Array<Interval> = []
      const startedAt = Date.now()
      const a = yield* startInstance("a", pg.url, intervals, { ...fastTiming.advisory, breaker: { staleAfter: "2500 millis", gracePeriod: "100 millis" } })
      const active = yield* eventually(activeOf(intervals, "a"), 15_000, "a active")
      assert.isAtLeast(active.start - startedAt, 2_000) // not before the holder had been idle past staleAfter
      const [gone] = yield* pg.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'stale-holder'")
      assert.strictEqual(gone?.n, 0)
      assert.strictEqual(yield* a.status.pipe(Effect.map((s) => s._tag)), "Active")
    }))
})

describe("Ownership (lease lock, real PostgreSQL): sessions are not ownership", () => {
  it.live("terminating the holder's pooled backends is not a loss: the pool reconnects and the lease is renewed", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming.lease)
      yield* Deferred.await(a.firstHold)
      const b = yield* startInstance("b", pg.url, intervals, fastTiming.lease)
      yield* Effect.sleep("300 millis")
      const killed = yield* pg.query<{ ok: boolean }>(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'slotkeeper:orders:a:guard'")
      assert.isAtLeast(killed.length, 1)
      yield* Effect.sleep("3 seconds") // longer than the lease: renewals went on through new connections
      assert.strictEqual((yield* a.status)._tag, "Active")
      assert.strictEqual((yield* b.status)._tag, "Waiting")
      assert.strictEqual(intervals.length, 1)
    }))
})

describe.each(modes)("guardedSlotChange (%s lock, real PostgreSQL)", (mode) => {
  it.live("creates a slot for the owner (where guarded cannot), and refuses a zombie without creating anything", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming[mode])
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      const slots = pg.query<{ slot_name: string }>("SELECT slot_name FROM pg_replication_slots ORDER BY slot_name")
      // the row lock of `guarded` counts as a write, which slot creation refuses
      const refused = yield* Effect.flip(own.guarded(sql`SELECT slot_name FROM pg_create_logical_replication_slot('by_guarded', 'pgoutput')`))
      assert.strictEqual(refused._tag, "SqlError") // the caller's own statement failed: passed through as it is
      assert.match(refused._tag === "SqlError" ? SqlErrors.describe(refused) : "", /cannot create logical replication slot in transaction that has performed writes/)
      yield* own.guardedSlotChange(sql`SELECT slot_name FROM pg_create_logical_replication_slot('by_owner', 'pgoutput')`)
      assert.deepStrictEqual(yield* slots, [{ slot_name: "by_owner" }])
      // a takes no part any more; b owns the stream; a's captured guard is a zombie's
      yield* startInstance("b", pg.url, intervals, fastTiming[mode])
      yield* Fiber.interrupt(a.fiber)
      yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      const zombie = yield* Effect.flip(own.guardedSlotChange(sql`SELECT slot_name FROM pg_create_logical_replication_slot('by_zombie', 'pgoutput')`))
      assert.strictEqual(zombie._tag, "OwnershipLost")
      assert.deepStrictEqual(yield* slots, [{ slot_name: "by_owner" }])
    }))
})

describe("Ownership (lease lock, real PostgreSQL): renewals and guarded writes", () => {
  it.live("a long guarded transaction does not hold up lease renewals: the holder keeps the stream", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE slow (note text)")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming.lease)
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      // Renewals run every 400 ms from the acquisition; the holder's deadline is 1.5 s after the start of the last
      // good one. A 1.3 s guarded transaction started 250 ms after a renewal ends 1.55 s after it: a renewal that
      // had to wait for it would complete past the deadline.
      yield* Effect.sleep("250 millis")
      yield* own.guarded(Effect.andThen(sql`SELECT pg_sleep(1.3)`, sql`INSERT INTO slow VALUES ('slow but fine')`))
      yield* Effect.sleep("500 millis")
      assert.strictEqual((yield* a.status)._tag, "Active")
      assert.strictEqual(intervals.length, 1)
      assert.isUndefined(intervals[0]!.end)
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM slow"), [{ note: "slow but fine" }])
    }))
})

describe.each(modes)("Ownership across a failover (%s lock, real PostgreSQL 18)", (mode) => {
  it.live("after a promotion the instances compete again on the new primary, and the winner bumps the replicated epoch", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const standby = yield* Standby.make(primary, { slotSync: "off" }) // built before anyone connects (cold copy)
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", primary.url, intervals, fastTiming[mode])
      const held = yield* Deferred.await(a.firstHold)
      yield* standby.waitForReplay
      yield* standby.promote
      yield* primary.stop // the old primary is gone; a's sessions with it
      // what the new primary inherited: the ownership row (and in lease mode, a's lease)
      const [row] = yield* standby.query<{ epoch: string; holder: string }>("SELECT epoch::text AS epoch, holder FROM slotkeeper.ownership")
      assert.deepStrictEqual(row, { epoch: String(held.epoch), holder: "a" })
      const inherited = mode === "lease"
        ? (yield* standby.query<{ until_ms: number }>("SELECT (extract(epoch FROM lease_until) * 1000)::float8 AS until_ms FROM slotkeeper.leases"))[0]?.until_ms
        : undefined
      yield* startInstance("b", standby.url, intervals, fastTiming[mode])
      const active = yield* eventually(activeOf(intervals, "b"), 20_000, "b active on the new primary")
      assert.strictEqual(active.epoch, held.epoch + 1)
      const aInterval = yield* eventually(Effect.sync(() => intervals.find((i) => i.instance === "a" && i.end !== undefined)), 10_000, "a stopped")
      // a's guarded writes can land nowhere: its server is gone, and on the new primary its epoch is stale (above)
      const refused = yield* Effect.flip(held.guarded(a.ownership.sql`SELECT 1`))
      assert.oneOf(refused._tag, ["LockBackendError", "SqlError"])
      if (mode === "advisory") {
        // advisory locks are not replicated: the lock vanished with the old primary, so b may start before a notices
        // (a notices within its deadline), like after an administrator's kill; writes stay fenced, as shown above
        assert.isAtMost(aInterval.end! - active.start, a.ownership.config.lossDeadlineMs)
      } else {
        assert.isAtMost(aInterval.end!, active.start) // the inherited lease kept b out until a had stopped
      }
      if (mode === "lease") {
        // advisory locks are not replicated, leases are: b took over only after a's inherited lease ran out
        const [taken] = yield* standby.query<{ at_ms: number }>("SELECT (extract(epoch FROM acquired_at) * 1000)::float8 AS at_ms FROM slotkeeper.ownership")
        assert.isAtLeast(Number(taken!.at_ms), Number(inherited))
      }
    }))
})

describe.each(modes)("guarded writes on a dying connection (%s lock, real PostgreSQL)", (mode) => {
  // The connection of a guarded transaction dies mid-transaction: the ROLLBACK cannot be sent either. That is a
  // typed, retryable SqlError (the supervisor treats it as a loss and rejoins), never a defect that kills the process.
  it.live("the session dies inside the transaction: a typed retryable SqlError, nothing written, the next guarded write goes through", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE dying (note text)")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming[mode])
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      // a defect would fail the test here (Effect.flip turns only typed failures into values)
      const failure = yield* Effect.flip(own.guarded(Effect.andThen(
        sql`INSERT INTO dying VALUES ('lost with the session')`,
        sql`SELECT pg_terminate_backend(pg_backend_pid())`
      )))
      assert.strictEqual(failure._tag, "SqlError")
      assert.isTrue(failure._tag === "SqlError" && SqlErrors.isRetryable(failure))
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM dying"), [])
      // the guard's pool reconnects; the lock (a separate session, or the lease) was not touched
      yield* own.guarded(sql`INSERT INTO dying VALUES ('after the reconnect')`)
      assert.deepStrictEqual(yield* pg.query("SELECT note FROM dying"), [{ note: "after the reconnect" }])
    }))
})
