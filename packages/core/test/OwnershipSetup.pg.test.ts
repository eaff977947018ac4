/**
 * Starting ownership against real PostgreSQL: bad input is a typed error that says what to change, before anything
 * is modified; and a new owner waits for the previous owner's guarded write in flight.
 */
import { FaultProxy, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Logger, Redacted } from "effect"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import { activeOf, eventually, fastTiming, type Interval, startInstance } from "./ownership-helpers.ts"

describe("StreamOwnership setup (real PostgreSQL)", () => {
  it.live("a database not reachable yet (connections refused) is waited for, saying what to check without the password; it goes on once it is", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      yield* proxy.setMode("reset") // connections are refused
      const logged: Array<string> = []
      const making = yield* Effect.forkChild(StreamOwnership.make({
        streamId: "orders",
        instanceId: "a",
        url: Redacted.make(pg.urlWith({ port: proxy.port, password: "hunter2-secret" }))
      }).pipe(Effect.provide(Logger.layer([Logger.make((o) => void logged.push(String(o.message)))]))), { startImmediately: true })
      yield* Effect.sleep("1500 millis")
      assert.isUndefined(making.pollUnsafe(), "gave up instead of waiting")
      assert.match(logged.join("\n"), /cannot reach the database: .*Check the database URL.*; waiting for the server/)
      assert.notInclude(logged.join("\n"), "hunter2-secret")
      yield* proxy.setMode("pass")
      const ok = yield* Fiber.join(making)
      assert.strictEqual(ok.identity.publicationName, "slotkeeper_orders")
    }))

  it.live("bad configuration fails before anything is created", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const bad = yield* Effect.flip(StreamOwnership.make({ streamId: "Orders-EU", instanceId: "a", url: Redacted.make(pg.url) }))
      assert.strictEqual(bad._tag, "InvalidStreamId")
      const lease = yield* Effect.flip(StreamOwnership.make({
        streamId: "orders", instanceId: "a", url: Redacted.make(pg.url), mode: "lease", leaseDuration: "10 seconds", renewInterval: "5 seconds"
      }))
      assert.match(lease.message, /renewInterval .* must be less than half of leaseDuration/)
      assert.deepStrictEqual(yield* pg.query("SELECT nspname FROM pg_namespace WHERE nspname = 'slotkeeper'"), [])
    }))

  it.live("a role that may not create slotkeeper's table gets the statement an administrator must run", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE ROLE app LOGIN REPLICATION")
      yield* pg.query("REVOKE CREATE ON DATABASE postgres FROM PUBLIC")
      const error = yield* Effect.flip(StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(pg.urlWith({ user: "app" })) }))
      assert.strictEqual(error._tag, "OwnershipSetupError")
      assert.match(error.message, /role app may not create slotkeeper's table "slotkeeper".ownership in database postgres/)
      assert.include(error.message, `CREATE SCHEMA IF NOT EXISTS "slotkeeper" AUTHORIZATION "app"`)
      // after the administrator did that, the same role starts
      yield* pg.query(`CREATE SCHEMA IF NOT EXISTS "slotkeeper" AUTHORIZATION "app"`)
      const ok = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(pg.urlWith({ user: "app" })) })
      assert.strictEqual(ok.identity.publicationName, "slotkeeper_orders")
    }))

  it.live("a standby is refused: ownership needs the primary", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const { Standby } = yield* Effect.promise(() => import("@slotkeeper/testkit"))
      const standby = yield* Standby.make(pg, { slotSync: "off" })
      const error = yield* Effect.flip(StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(standby.url) }))
      assert.match(error.message, /is a standby \(in recovery\)/)
    }))
})

describe.each(["advisory", "lease"] as const)("a new owner waits for the previous owner's guarded write in flight (%s)", (mode) => {
  it.live("the takeover completes only after that write committed, and the write's data is there", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE journal (note text, at timestamptz DEFAULT clock_timestamp())")
      const intervals: Array<Interval> = []
      const a = yield* startInstance("a", pg.url, intervals, fastTiming[mode])
      const own = yield* Deferred.await(a.firstHold)
      const sql = a.ownership.sql
      // a's guarded write holds its transaction open for 700 ms
      const write = yield* Effect.forkChild(
        own.guarded(Effect.andThen(sql`SELECT pg_sleep(0.7)`, sql`INSERT INTO journal (note) VALUES ('a in flight')`)),
        { startImmediately: true }
      )
      yield* Effect.sleep("100 millis")
      yield* startInstance("b", pg.url, intervals, fastTiming[mode])
      // a leaves without waiting (its release is what lets b in at once)
      yield* Effect.forkChild(Fiber.interrupt(a.fiber), { startImmediately: true })
      yield* Fiber.join(write)
      const b = yield* eventually(activeOf(intervals, "b"), 10_000, "b active")
      const [row] = yield* pg.query<{ committed_ms: number; acquired_ms: number }>(
        `SELECT (extract(epoch FROM (SELECT at FROM journal)) * 1000)::float8 AS committed_ms,
                (extract(epoch FROM (SELECT acquired_at FROM slotkeeper.ownership WHERE stream_id = 'orders')) * 1000)::float8 AS acquired_ms`)
      // b's acquisition (its epoch bump) happened after a's write
      assert.isAtLeast(Number(row!.acquired_ms), Number(row!.committed_ms))
      assert.strictEqual(b.epoch, own.epoch + 1)
    }))
})
