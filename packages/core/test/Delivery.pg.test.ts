import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Redacted, Scope, Stream, SubscriptionRef } from "effect"
import pg from "pg"
import * as Lsn from "../src/Lsn.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import * as StreamId from "../src/StreamId.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"
import { type Consumer, deliveryOptions, slotOf, slotRow, startConsumer } from "./delivery-helpers.ts"

const prepare = (major: number, settings: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major, settings })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    yield* pg.query("CREATE TABLE other (id bigserial PRIMARY KEY, body text)")
    yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
    return pg
  })

const insertEach = (pg: { query: (sql: string) => Effect.Effect<unknown, unknown> }, from: number, to: number) =>
  Effect.gen(function*() {
    for (let id = from; id <= to; id++) yield* pg.query(`INSERT INTO items VALUES (${id}, 'row ${id}')`)
  })

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

const delivered = (consumer: Consumer, n: number, what: string) =>
  eventually(Effect.sync(() => (consumer.ids().length >= n ? consumer.ids() : undefined)), 20_000, `${consumer.name}: ${what}`)

// 15 and 18: what needs 17+ (failover slots) is reported unavailable on 15, and the rest holds on both.
describe.each([15, 18])("Delivery (real PostgreSQL %i)", (major) => {
  it.live("confirmed_flush follows acknowledgements and never passes an unacknowledged change; a restart repeats none and loses none", () =>
    Effect.gen(function*() {
      const pg = yield* prepare(major)
      const scopeA = yield* Scope.make()
      const a = yield* Scope.provide(scopeA)(startConsumer("a", pg.url, { acknowledge: (ids) => ids.every((id) => id <= 10) }))
      yield* eventually(Effect.map(slotRow(pg, "slotkeeper_orders_1"), (r) => r), 20_000, "the slot")
      yield* insertEach(pg, 1, 10)
      yield* delivered(a, 10, "rows 1-10")
      yield* insertEach(pg, 11, 15)
      yield* delivered(a, 15, "rows 11-15")
      assert.deepStrictEqual(a.ids(), range(1, 15))
      const lastAcked = a.delivered.filter((d) => d.acknowledged).at(-1)!
      const firstUnacked = a.delivered.find((d) => !d.acknowledged)!
      assert.deepStrictEqual(lastAcked.ids, [10])
      // the slot follows the acknowledgements (window 0): to the last acknowledged commit's end — or to a keepalive's
      // position past it that came while nothing was in flight (the walsender says so after the checkpoint's own WAL),
      // which is never past the first unacknowledged transaction ...
      const settled = (r: { readonly confirmed: bigint | undefined } | undefined) =>
        r?.confirmed !== undefined && r.confirmed >= lastAcked.endLsn && r.confirmed <= firstUnacked.commitLsn
      yield* eventually(Effect.map(slotRow(pg, "slotkeeper_orders_1"), (r) => (settled(r) ? true : undefined)), 10_000,
        `confirmed_flush at or past the last acknowledged commit's end ${Lsn.format(lastAcked.endLsn)}`).pipe(
        // on a timeout, what the slot, the checkpoint and the consumer had
        Effect.tapCause(() => Effect.gen(function*() {
          console.log("slot", yield* slotRow(pg, "slotkeeper_orders_1"))
          console.log("checkpoint", yield* pg.query("SELECT lsn::text, slot_name, epoch::text FROM slotkeeper.checkpoints"))
          console.log("delivered", a.delivered.map((d) => [d.ids, Lsn.format(d.commitLsn), Lsn.format(d.endLsn), d.acknowledged]))
        }))
      )
      // ... and does not move for the unacknowledged ones, however long we wait
      yield* Effect.sleep("600 millis")
      const held = (yield* slotRow(pg, "slotkeeper_orders_1"))!
      assert.isTrue(settled(held), `confirmed_flush ${Lsn.format(held.confirmed ?? 0n)}`)
      const [checkpoint] = yield* pg.query<{ lsn: string; slot_name: string }>("SELECT lsn::text AS lsn, slot_name FROM slotkeeper.checkpoints WHERE stream_id = 'orders'")
      assert.deepStrictEqual(checkpoint, { lsn: Lsn.format(held.confirmed!), slot_name: "slotkeeper_orders_1" })

      // restart: another instance takes over and gets exactly the unacknowledged rows, then new ones
      yield* Scope.close(scopeA, Exit.void)
      const b = yield* startConsumer("b", pg.url)
      yield* delivered(b, 5, "the unacknowledged rows 11-15")
      yield* insertEach(pg, 16, 16)
      yield* delivered(b, 6, "row 16")
      assert.deepStrictEqual(b.ids(), range(11, 16))
    }))

  it.live("a transaction consumed partly: after a restart it resumes after the last acknowledged change (position inside the transaction)", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      const scopeA = yield* Scope.make()
      const ownershipA = yield* Scope.provide(scopeA)(StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(server.url), ...fastTiming.advisory }))
      const seenA: Array<number> = []
      yield* Scope.provide(scopeA)(Effect.forkScoped(ownershipA.supervisor.run(Delivery.run({ ...deliveryOptions, url: Redacted.make(server.url), instanceId: "a", sql: ownershipA.sql }, (connection) =>
        Stream.runForEach(connection.events, (event) =>
          // a consumer that makes each change durable on its own, and stops (crashes) after the fourth of ten
          event._tag === "Change" && event.seq <= 4
            ? Effect.andThen(Effect.sync(() => void seenA.push(Number(event.new!.id))), connection.acknowledge({ commitLsn: event.commitLsn, seq: event.seq }))
            : Effect.void)))))
      yield* eventually(Effect.map(server.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
      yield* server.query("INSERT INTO items SELECT g, 'one transaction' FROM generate_series(1, 10) g")
      yield* eventually(Effect.map(server.query<{ seq: number | null }>("SELECT tx_seq AS seq FROM slotkeeper.checkpoints"), (r) => (r[0]?.seq === 4 ? true : undefined)), 10_000, "the position inside the transaction saved")
      yield* Scope.close(scopeA, Exit.void)
      assert.deepStrictEqual(seenA, [1, 2, 3, 4])
      const b = yield* startConsumer("b", server.url)
      assert.deepStrictEqual(yield* delivered(b, 6, "the rest of the transaction"), [5, 6, 7, 8, 9, 10])
      yield* server.query("INSERT INTO items VALUES (11, 'next')")
      assert.deepStrictEqual(yield* delivered(b, 7, "the next transaction"), [5, 6, 7, 8, 9, 10, 11])
    }))

  it.live("a slow consumer: the socket is not read while the queue is full, yet status updates keep the connection within wal_sender_timeout", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major, { wal_sender_timeout: "1s" })
      const sessions: Array<bigint> = []
      const got: Array<number> = []
      const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(server.url), ...fastTiming.advisory })
      yield* Effect.forkScoped(ownership.supervisor.run(Delivery.run({ ...deliveryOptions, statusInterval: "10 seconds", bufferSize: 4, url: Redacted.make(server.url), instanceId: "a", sql: ownership.sql }, (connection) =>
        Effect.andThen(Effect.sync(() => void sessions.push(connection.startedAt)), Stream.runForEach(connection.events, (event) =>
          event._tag === "Change"
            ? Effect.andThen(Effect.sync(() => void got.push(Number(event.new!.id))), event.seq === 1 ? Effect.sleep("4 seconds") : Effect.void) // slow
            : event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void)))))
      yield* eventually(Effect.map(server.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the slot")
      // enough data (about 8 MB per transaction) that the server's sends block on the full socket while the consumer stalls
      yield* server.query("INSERT INTO items SELECT g, repeat('x', 400) FROM generate_series(1, 20000) g")
      yield* server.query("INSERT INTO items SELECT g, repeat('x', 400) FROM generate_series(20001, 40000) g")
      yield* eventually(Effect.sync(() => (got.length >= 40000 ? true : undefined)), 60_000, "40,000 rows through a slow consumer")
      assert.deepStrictEqual(got, Array.from({ length: 40000 }, (_, i) => i + 1))
      assert.strictEqual(sessions.length, 1) // never timed out and reconnected, though each transaction stalled 4 s > wal_sender_timeout
    }))

  it.live("a transaction committing right at an acknowledged commit's end is delivered after a restart (positions are exact, not + 1)", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      // the slot exists; then nothing of slotkeeper runs while two transactions interleave
      const setup = yield* Scope.make()
      const first = yield* Scope.provide(setup)(startConsumer("setup", server.url))
      yield* eventually(slotOf(first), 20_000, "the slot")
      yield* Scope.close(setup, Exit.void)
      const x = new pg.Client({ connectionString: server.url })
      yield* Effect.promise(() => x.connect())
      yield* Effect.addFinalizer(() => Effect.promise(() => x.end()))
      yield* Effect.promise(() => x.query("BEGIN"))
      yield* Effect.promise(() => x.query("INSERT INTO items VALUES (100, 'x: begun first, committed second')"))
      yield* server.query("INSERT INTO items VALUES (101, 'y: committed first')")
      yield* Effect.promise(() => x.query("COMMIT"))

      const scopeA = yield* Scope.make()
      const a = yield* Scope.provide(scopeA)(startConsumer("a", server.url, { acknowledge: (ids) => ids.includes(101) }))
      yield* delivered(a, 2, "both transactions")
      const [y, xTx] = a.delivered
      assert.deepStrictEqual([y!.ids, xTx!.ids], [[101], [100]])
      assert.strictEqual(xTx!.commitLsn, y!.endLsn, "precondition: x's commit record starts exactly where y's ends")
      yield* eventually(Effect.map(slotRow(server, "slotkeeper_orders_1"), (r) => (r?.confirmed === y!.endLsn ? true : undefined)), 10_000, "the slot at y's end")
      yield* Scope.close(scopeA, Exit.void)
      const b = yield* startConsumer("b", server.url)
      assert.deepStrictEqual(yield* delivered(b, 1, "x again"), [100])
    }))

  it.live("a walsender terminated mid-stream: the connection is reopened (resume checks again), nothing acknowledged repeats, nothing is lost", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      const a = yield* startConsumer("a", server.url, { acknowledge: (ids) => ids.every((id) => id <= 5) })
      yield* eventually(slotOf(a), 20_000, "the slot")
      yield* insertEach(server, 1, 8)
      yield* delivered(a, 8, "rows 1-8")
      const lastAcked = a.delivered.filter((d) => d.acknowledged).at(-1)!
      yield* eventually(Effect.map(server.query<{ lsn: string }>("SELECT lsn::text AS lsn FROM slotkeeper.checkpoints"), (r) => (r[0]?.lsn === Lsn.format(lastAcked.endLsn) ? true : undefined)), 10_000, "the checkpoint at row 5")
      const killed = yield* server.query<{ pid: number }>(
        "SELECT pg_terminate_backend(pid)::text, pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name LIKE 'slotkeeper:orders:a:repl'"
      )
      assert.lengthOf(killed, 1)
      yield* insertEach(server, 9, 10)
      // rows 6-8 were never acknowledged: delivered again on the new connection, then 9-10; 1-5 never again
      yield* delivered(a, 13, "rows 6-10 on the new connection")
      assert.deepStrictEqual(a.ids(), [...range(1, 8), ...range(6, 10)])
      assert.strictEqual((yield* a.ownership.supervisor.status.pipe(SubscriptionRef.get))._tag, "Active") // ownership was never at stake
    }))

  it.live("an idle published table: the WAL the slot retains stays bounded while other tables are written", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      const a = yield* startConsumer("a", server.url, { delivery: { heartbeatInterval: "300 millis" } })
      yield* eventually(slotOf(a), 20_000, "the slot")
      const lsn = Effect.map(server.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn"), (r) => Lsn.parseUnsafe(r[0]!.lsn))
      const start = yield* lsn
      for (let round = 0; round < 12; round++) {
        yield* server.query("INSERT INTO other (body) SELECT repeat('x', 1000) FROM generate_series(1, 4000)")
        // what the background writer does every 15 s on a busy server: a snapshot that lets restart_lsn move
        yield* server.query(major >= 16 ? "SELECT pg_log_standby_snapshot()::text" : "CHECKPOINT")
      }
      const written = (yield* lsn) - start
      assert.isAtLeast(Number(written), 40 * 1024 * 1024)
      // restart_lsn can only move to a running-transactions snapshot that shows none of the stream's own short
      // transactions (checkpoint saves, slot advances) in flight; the background writer logs one every 15 s on a busy
      // server, the probe logs one each round
      const retained = yield* eventually(Effect.gen(function*() {
        yield* Effect.sleep("200 millis")
        yield* server.query(major >= 16 ? "SELECT pg_log_standby_snapshot()::text" : "CHECKPOINT")
        const row = yield* slotRow(server, "slotkeeper_orders_1")
        const held = (yield* lsn) - (row?.restart ?? 0n)
        return held < 4n * 1024n * 1024n ? held : undefined
      }), 30_000, "the slot's restart_lsn to follow the idle stream")
      assert.isBelow(Number(retained), 4 * 1024 * 1024)
      assert.deepStrictEqual(a.delivered, []) // nothing published was written; the heartbeat messages are not delivered
    }))

  it.live("nothing received for the heartbeat interval: a heartbeat message is written, moves the durable position, and is not delivered", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      const a = yield* startConsumer("a", server.url, { delivery: { heartbeatInterval: "300 millis" } })
      const slot = yield* eventually(slotOf(a), 20_000, "the slot")
      assert.strictEqual(slot.failoverUnavailable !== undefined, major < 17) // reported, not failed, before 17
      // an observer of everything decoded from now on
      yield* server.query("SELECT slot_name FROM pg_create_logical_replication_slot('observer', 'pgoutput')")
      const heartbeats = server.query<{ lsn: string }>(
        `SELECT lsn::text AS lsn FROM pg_logical_slot_peek_binary_changes('observer', NULL, NULL, 'proto_version', '1',
           'publication_names', 'slotkeeper_orders', 'messages', 'true')
          WHERE position(convert_to('slotkeeper:heartbeat:orders', 'UTF8') in data) > 0`
      )
      const seen = yield* eventually(Effect.map(heartbeats, (rows) => (rows.length >= 2 ? rows : undefined)), 10_000, "two heartbeat messages")
      const first = Lsn.parseUnsafe(seen[0]!.lsn)
      const checkpoint = Effect.map(server.query<{ lsn: string }>("SELECT lsn::text AS lsn FROM slotkeeper.checkpoints"), (r) => (r[0] ? Lsn.parseUnsafe(r[0].lsn) : undefined))
      yield* eventually(Effect.map(checkpoint, (lsn) => (lsn !== undefined && lsn > first ? lsn : undefined)), 10_000, "the durable position past a heartbeat")
      assert.deepStrictEqual(a.delivered, [])
    }))

  const tampering = [
    {
      what: "a slot advanced past the durable position behind slotkeeper's back",
      // rows 4-6, written before it, are skipped by the advance
      before: [],
      after: ["SELECT end_lsn::text FROM pg_replication_slot_advance('slotkeeper_orders_1', pg_current_wal_lsn())"]
    },
    {
      what: "a slot dropped and re-created under its name behind slotkeeper's back",
      // rows 4-6, written between, are lost with the old slot
      before: ["SELECT pg_drop_replication_slot('slotkeeper_orders_1')"],
      after: ["SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_1', 'pgoutput')"]
    }
  ]
  for (const { after, before, what } of tampering) {
    it.live(`${what}: refused with SlotAhead, nothing delivered, nothing skipped silently`, () =>
      Effect.gen(function*() {
        const server = yield* prepare(major)
        const scopeA = yield* Scope.make()
        const a = yield* Scope.provide(scopeA)(startConsumer("a", server.url))
        yield* eventually(slotOf(a), 20_000, "the slot")
        yield* insertEach(server, 1, 3)
        yield* delivered(a, 3, "rows 1-3")
        yield* Scope.close(scopeA, Exit.void)
        for (const statement of before) yield* server.query(statement)
        yield* insertEach(server, 4, 6)
        for (const statement of after) yield* server.query(statement)
        const b = yield* startConsumer("b", server.url)
        const exit = yield* Fiber.await(b.fiber)
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        assert.include(error, { _tag: "ResumeRefused", reason: "SlotAhead" })
        assert.match(String((error as { message: string }).message), /ahead of the durable position .* never be sent again/)
        assert.deepStrictEqual(b.delivered, [])
      }))
  }

  it.live("persistent mode: the slot is streamed directly, its position follows the saved acknowledgements; while another walsender holds it, the next owner waits", () =>
    Effect.gen(function*() {
      const server = yield* prepare(major)
      const persistent = { delivery: { mode: "persistent" } } as const
      const scopeA = yield* Scope.make()
      const a = yield* Scope.provide(scopeA)(startConsumer("a", server.url, persistent))
      yield* eventually(slotOf(a), 20_000, "the slot")
      yield* insertEach(server, 1, 3)
      yield* delivered(a, 3, "rows 1-3")
      const last = a.delivered.at(-1)!
      // the walsender holds the persistent slot itself, and its flush feedback (the saved position) moves it
      yield* eventually(Effect.map(slotRow(server, "slotkeeper_orders_1"), (r) => (r?.active && r.confirmed === last.endLsn ? true : undefined)), 10_000,
        "the held slot at the last acknowledged end")
      yield* Scope.close(scopeA, Exit.void)
      // a walsender that is not ours holds the slot (as a previous instance's would, until the server notices it is gone)
      const holder = new pg.Client({ connectionString: server.url, replication: "database" } as pg.ClientConfig)
      yield* Effect.promise(() => holder.connect())
      holder.on("error", () => {})
      holder.query("START_REPLICATION SLOT slotkeeper_orders_1 LOGICAL 0/0 (proto_version '1', publication_names 'slotkeeper_orders')").catch(() => {})
      const [held] = yield* eventually(Effect.map(server.query<{ pid: number }>("SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = 'slotkeeper_orders_1' AND active"), (r) => (r.length > 0 ? r : undefined)), 10_000, "the foreign walsender")
      const b = yield* startConsumer("b", server.url, persistent)
      yield* insertEach(server, 4, 5)
      yield* Effect.sleep("1500 millis")
      assert.deepStrictEqual(b.delivered, []) // waiting, not stealing
      yield* server.query("SELECT pg_terminate_backend($1)", [held!.pid])
      assert.deepStrictEqual(yield* delivered(b, 2, "rows 4-5 once the slot is free"), [4, 5])
    }))
})

describe("Delivery stopping (real PostgreSQL 18)", () => {
  it.live("a stop waits for the stream's write lock at most finalSaveTimeout + finalAdvanceTimeout, not the 5 s loss deadline per guarded write", () =>
    Effect.gen(function*() {
      const server = yield* prepare(18)
      const scope = yield* Scope.make()
      // the default timing: every guarded write waits up to the 5 s loss deadline for the stream's write lock
      const defaults = { heartbeatInterval: "1 second", lossDeadline: "5 seconds", serverReleaseBound: "10 seconds", safetyMargin: "2 seconds", acquireInterval: "500 millis" } as const
      const a = yield* Scope.provide(scope)(startConsumer("a", server.url, { ownership: defaults, delivery: { advanceInterval: "1 hour", saveInterval: "1 hour" } }))
      yield* eventually(slotOf(a), 20_000, "the slot")
      yield* eventually(Effect.map(server.query("SELECT 1 FROM pg_replication_slots WHERE temporary AND active"), (r) => (r.length > 0 ? true : undefined)), 20_000, "streaming")
      yield* insertEach(server, 1, 3)
      yield* delivered(a, 3, "rows 1-3")
      // another session holds the stream's write lock, as a guarded write that does not end would
      const writeLock = StreamId.identity("postgres", "orders").writeLock
      const holder = new pg.Client({ connectionString: server.url })
      yield* Effect.promise(async () => {
        await holder.connect()
        await holder.query("BEGIN")
        await holder.query("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", [writeLock.namespace, writeLock.key])
      })
      const started = performance.now()
      yield* Scope.close(scope, Exit.void)
      const stoppedMs = performance.now() - started
      yield* Effect.promise(() => holder.query("ROLLBACK").then(() => holder.end()))
      // 2 s for the last save and 1.5 s for the last advance at most; before, each waited the 5 s lock timeout
      assert.isBelow(stoppedMs, 4500)
      // what the last save could not write is delivered again by the next owner: nothing is lost
      const b = yield* startConsumer("b", server.url)
      yield* delivered(b, 3, "rows 1-3 again")
      assert.deepStrictEqual(b.ids(), [1, 2, 3])
    }))
})
