import { PgConnection } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Redacted } from "effect"
import * as FaultProxy from "../src/FaultProxy.ts"
import { pollUntil } from "@slotkeeper/embedded/internal"
import * as PgCluster from "../src/PgCluster.ts"
import type { PgServer } from "@slotkeeper/embedded"

const backendsNamed = (pg: PgServer.PgServer, name: string) =>
  pg.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [name])

const connectVia = (pg: PgServer.PgServer, proxy: FaultProxy.FaultProxy, applicationName: string, params?: Record<string, string>) =>
  PgConnection.make({
    url: Redacted.make(pg.urlWith({ port: proxy.port, applicationName, ...(params ? { params } : {}) })),
    connectTimeout: "2 seconds"
  })

describe("FaultProxy", () => {
  it.live("blackhole: a query hangs until the client's deadline while the TCP connection stays open; pass lets new connections through", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      const conn = yield* connectVia(pg, proxy, "through-proxy")
      assert.deepStrictEqual((yield* conn.query("SELECT 1 AS one")).rows, [{ one: 1 }])

      yield* proxy.setMode("blackhole")
      // The client's deadline: wait for the query at most 1 s, without waiting for its cancellation (which would go
      // through the blackhole too).
      const query = yield* Effect.forkChild(conn.query("SELECT 2 AS two"), { startImmediately: true })
      const outcome = yield* Fiber.await(query).pipe(Effect.timeoutOption("1 second"))
      assert.isTrue(Option.isNone(outcome), "the query must not complete through a blackhole")
      // the connection is still open on both sides: the server's backend is there, the proxy holds the pair
      assert.deepStrictEqual(yield* backendsNamed(pg, "through-proxy"), [{ pid: conn.processId }])
      assert.strictEqual(yield* proxy.openConnections, 1)
      // a new connection is accepted by the proxy's kernel but its startup hangs
      const refused = yield* Effect.flip(Effect.scoped(connectVia(pg, proxy, "during-partition")))
      assert.strictEqual(refused._tag, "SqlError")
      assert.deepStrictEqual(yield* backendsNamed(pg, "during-partition"), [])

      yield* proxy.setMode("pass")
      // new connections go through
      const fresh = yield* connectVia(pg, proxy, "after-partition")
      assert.deepStrictEqual((yield* fresh.query("SELECT 3 AS three")).rows, [{ three: 3 }])
      // and the held query is delivered once the partition heals, as TCP retransmission would
      const healed = yield* Fiber.join(query)
      assert.deepStrictEqual(healed.rows, [{ two: 2 }])
    }))

  it.live("blackhole: the server ends an idle session after idle_session_timeout while the client knows nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      const conn = yield* connectVia(pg, proxy, "lock-session", { options: "-c idle_session_timeout=2s" })
      yield* proxy.setMode("blackhole")
      // the server-enforced bound: the backend is gone within idle_session_timeout (+ margin for a busy machine)
      yield* pollUntil(
        Effect.map(backendsNamed(pg, "lock-session"), (rows) => (rows.length === 0 ? true : undefined)),
        { timeoutMs: 15_000, intervalMs: 100, onTimeout: () => new Error("the server kept the session through the partition") }
      )
      assert.match(pg.logTail(50), /terminating connection due to idle-session timeout/)
      // the client side still sees an open connection: it must detect the loss with its own deadline
      assert.strictEqual(yield* proxy.openConnections, 1)
      assert.isNumber(conn.processId)
    }))

  it.live("reset: open connections fail at once, new ones are refused until pass", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      const conn = yield* connectVia(pg, proxy, "to-be-reset")
      yield* proxy.setMode("reset")
      const failed = yield* Effect.flip(conn.query("SELECT 1"))
      assert.strictEqual(failed._tag, "SqlError")
      assert.strictEqual(yield* proxy.openConnections, 0)
      // the server saw its side closed too
      yield* pollUntil(
        Effect.map(backendsNamed(pg, "to-be-reset"), (rows) => (rows.length === 0 ? true : undefined)),
        { timeoutMs: 10_000, intervalMs: 50, onTimeout: () => new Error("the server did not see the reset") }
      )
      const refused = yield* Effect.flip(Effect.scoped(connectVia(pg, proxy, "while-reset")))
      assert.strictEqual(refused._tag, "SqlError")
      yield* proxy.setMode("pass")
      const again = yield* connectVia(pg, proxy, "after-reset")
      assert.deepStrictEqual((yield* again.query("SELECT 1 AS one")).rows, [{ one: 1 }])
    }))

  it.live("latency: every round trip through the proxy takes at least twice the added delay", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      const conn = yield* connectVia(pg, proxy, "slow-path")
      yield* proxy.setLatency(150)
      const started = Date.now()
      assert.deepStrictEqual((yield* conn.query("SELECT 1 AS one")).rows, [{ one: 1 }])
      // a lower bound only: it holds on any machine, however busy
      assert.isAtLeast(Date.now() - started, 300)
      yield* proxy.setLatency(0)
      assert.deepStrictEqual((yield* conn.query("SELECT 2 AS two")).rows, [{ two: 2 }])
    }))

  it.live("setTarget: new connections reach the other server, open ones stay with theirs (an address moved)", () =>
    Effect.gen(function*() {
      const first = yield* PgCluster.make({ name: "first" })
      const second = yield* PgCluster.make({ name: "second" })
      const port = (conn: { query: (sql: string) => Effect.Effect<{ rows: ReadonlyArray<unknown> }, unknown> }) =>
        Effect.map(conn.query("SELECT current_setting('port')::int AS port"), (r) => (r.rows[0] as { port: number }).port)
      const proxy = yield* FaultProxy.make({ targetPort: first.port })
      const before = yield* connectVia(first, proxy, "before-move")
      yield* proxy.setTarget(second.port)
      assert.strictEqual(yield* proxy.targetPort, second.port)
      const after = yield* connectVia(second, proxy, "after-move")
      assert.deepStrictEqual([yield* port(before), yield* port(after)], [first.port, second.port])
    }))
})
