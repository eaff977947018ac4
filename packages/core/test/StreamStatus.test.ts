/**
 * What a running stream shows: the health decision (pure), and the routes on Effect's `HttpRouter` answering real
 * `Request`s (`HttpRouter.toWebHandler`, no socket) — `/metrics` rendered by Effect's Prometheus exporter.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Metric, Ref } from "effect"
import { HttpRouter } from "effect/http"
import { HttpRoutes, type OwnershipStatus, StreamMetrics, StreamStatus } from "../src/index.ts"

const capture = { epoch: 3, slotName: "slotkeeper_orders_1", origin: 0x1600000n, from: 0x16b3748n, since: 0 }

const snapshot = (status: OwnershipStatus, capturing = true): StreamStatus.Snapshot => ({
  streamId: "orders",
  status,
  capture: capturing ? capture : undefined,
  slotName: "slotkeeper_orders_1",
  slot: { level: "ok", findings: [], retainedBytes: 100n, flushLagBytes: 40n, walStatus: "extended", safeWalSize: 5000n },
  acknowledgedLsn: 0x16b3748n
})

const owning = { _tag: "Active", since: 0, epoch: 3 } as const

/** The routes over `current`, with a registry of their own; `run` runs an effect (e.g. `delivered`) in the same registry. */
const routes = (current: Ref.Ref<StreamStatus.Snapshot>) => {
  const registry = new Map()
  const app = HttpRoutes.layer.pipe(
    Layer.provide(Layer.succeed(StreamStatus.StreamStatus)({ snapshot: Ref.get(current) })),
    Layer.provide(Layer.succeed(Metric.MetricRegistry)(registry))
  )
  const { dispose, handler } = HttpRouter.toWebHandler(app, { disableLogger: true })
  const get = (path: string) =>
    Effect.promise(async () => {
      const response = await handler(new Request(`http://localhost${path}`))
      return { status: response.status, type: response.headers.get("content-type"), text: await response.text() }
    })
  return {
    get,
    run: <A>(effect: Effect.Effect<A>) => effect.pipe(Effect.provideService(Metric.MetricRegistry, registry)),
    dispose: Effect.promise(dispose)
  }
}

describe("StreamStatus (pure)", () => {
  it("an owner is active only while it captures (its replication connection streams): before that /health says starting and /health/owner is 503", () => {
    assert.strictEqual(StreamStatus.owner(snapshot(owning, false)).status, 503)
    assert.deepStrictEqual(StreamStatus.health(snapshot(owning, false)).body, {
      state: "starting", owner: true, capturing: false, epoch: 3, capture_start_lsn: null, streaming_from: null, failover_ready: null, publication_problems: [],
      slot: { name: "slotkeeper_orders_1", level: "ok", wal_status: "extended", inactive_since: null, idle_timeout_left_seconds: null, findings: [] }
    })
    assert.deepStrictEqual(StreamStatus.owner(snapshot(owning)).body, {
      state: "active", owner: true, capturing: true, epoch: 3, capture_start_lsn: "0/1600000", streaming_from: "0/16B3748", failover_ready: null, publication_problems: [],
      slot: { name: "slotkeeper_orders_1", level: "ok", wal_status: "extended", inactive_since: null, idle_timeout_left_seconds: null, findings: [] }
    })
    // a capture of an earlier holding period does not count
    assert.strictEqual(StreamStatus.owner({ ...snapshot(owning), status: { ...owning, epoch: 4 } }).status, 503)
  })

  it("/health is 200 while starting, waiting or active, 503 when stopping or failed; /health/owner only while active", () => {
    const cases: Array<[OwnershipStatus, number, number]> = [
      [{ _tag: "Starting" }, 200, 503],
      [{ _tag: "Waiting", since: 0, holder: undefined, lastError: undefined }, 200, 503],
      [owning, 200, 200],
      [{ _tag: "Stopping", reason: "SIGTERM", at: 0 }, 503, 503],
      [{ _tag: "Failed", error: "x" }, 503, 503]
    ]
    for (const [status, health, owner] of cases) {
      assert.strictEqual(StreamStatus.health(snapshot(status)).status, health, status._tag)
      assert.strictEqual(StreamStatus.owner(snapshot(status)).status, owner, status._tag)
    }
  })
})

describe("HttpRoutes (Effect's HttpRouter, requests without a socket)", () => {
  it.effect("/health and /health/owner answer the snapshot of the moment as JSON; anything else is 404", () =>
    Effect.gen(function*() {
      const current = yield* Ref.make(snapshot(owning, false))
      const r = routes(current)
      const starting = yield* r.get("/health")
      assert.strictEqual(starting.status, 200)
      assert.strictEqual(starting.type, "application/json")
      assert.strictEqual(JSON.parse(starting.text).state, "starting")
      assert.strictEqual((yield* r.get("/health/owner")).status, 503)
      yield* Ref.set(current, snapshot(owning))
      const active = yield* r.get("/health/owner")
      assert.strictEqual(active.status, 200)
      assert.deepInclude(JSON.parse(active.text), { state: "active", epoch: 3, capture_start_lsn: "0/1600000" })
      yield* Ref.set(current, snapshot({ _tag: "Stopping", reason: "SIGTERM", at: 0 }))
      assert.strictEqual((yield* r.get("/health")).status, 503)
      const missing = yield* r.get("/nope")
      assert.strictEqual(missing.status, 404)
      assert.match(missing.text, /GET \/health, \/health\/owner or \/metrics/)
      yield* r.dispose
    }))

  it.effect("/metrics: Prometheus text from Effect's exporter — the snapshot's gauges, the delivery counters and histograms; a problem gone is a series gone", () =>
    Effect.gen(function*() {
      const problems = [
        { code: "WritesWouldBreak", message: "publication slotkeeper_orders: not changed, because PostgreSQL would then refuse the application's UPDATE on public.t" },
        { code: "TableRenamed", message: "table public.a (subscription \"a\") is now public.a2" },
        { code: "TableRenamed", message: "table public.b (subscription \"b\") is now public.b2" }
      ]
      const current = yield* Ref.make<StreamStatus.Snapshot>({ ...snapshot(owning), publicationProblems: problems })
      const r = routes(current)
      yield* r.run(StreamMetrics.register("orders"))
      const before = yield* r.get("/metrics")
      assert.strictEqual(before.status, 200)
      assert.strictEqual(before.type, "text/plain; version=0.0.4; charset=utf-8")
      assert.include(before.text, "slotkeeper_changes_delivered_total{stream=\"orders\"} 0")
      yield* r.run(StreamMetrics.delivered("orders", { changes: 12, transactions: 3, bytes: 4096, sinkSeconds: 0.004, lastCommitTime: new Date(Date.now() - 30).toISOString() }))
      yield* r.run(StreamMetrics.delivered("orders", { changes: 1, transactions: 1, bytes: 100, sinkSeconds: 0.002 }))
      const body = (yield* r.get("/metrics")).text
      for (const line of [
        "# TYPE slotkeeper_state gauge",
        "slotkeeper_state{stream=\"orders\",state=\"active\"} 1",
        "slotkeeper_state{stream=\"orders\",state=\"waiting\"} 0",
        "slotkeeper_capturing{stream=\"orders\"} 1",
        "slotkeeper_ownership_epoch{stream=\"orders\"} 3",
        "slotkeeper_capture_start_lsn{stream=\"orders\"} 23068672",
        "slotkeeper_acknowledged_lsn{stream=\"orders\"} 23803720",
        "slotkeeper_slot_retained_bytes{stream=\"orders\",slot=\"slotkeeper_orders_1\"} 100",
        "slotkeeper_slot_safe_wal_size_bytes{stream=\"orders\",slot=\"slotkeeper_orders_1\"} 5000",
        "slotkeeper_slot_wal_status{stream=\"orders\",slot=\"slotkeeper_orders_1\",wal_status=\"extended\"} 1",
        "slotkeeper_slot_wal_status{stream=\"orders\",slot=\"slotkeeper_orders_1\",wal_status=\"lost\"} 0",
        "slotkeeper_publication_problems{stream=\"orders\",code=\"WritesWouldBreak\"} 1",
        "slotkeeper_publication_problems{stream=\"orders\",code=\"TableRenamed\"} 2",
        "# TYPE slotkeeper_changes_delivered_total counter",
        "slotkeeper_changes_delivered_total{stream=\"orders\"} 13",
        "slotkeeper_transactions_delivered_total{stream=\"orders\"} 4",
        "slotkeeper_bytes_delivered_total{stream=\"orders\"} 4196",
        "slotkeeper_errors_total{stream=\"orders\"} 0",
        "# TYPE slotkeeper_sink_write_seconds histogram",
        "slotkeeper_sink_write_seconds_bucket{stream=\"orders\",le=\"0.0025\"} 1",
        "slotkeeper_sink_write_seconds_bucket{stream=\"orders\",le=\"0.005\"} 2",
        "slotkeeper_sink_write_seconds_count{stream=\"orders\"} 2",
        // one batch had a commit time: its age observed once
        "slotkeeper_commit_to_sink_seconds_count{stream=\"orders\"} 1"
      ]) assert.include(body, line)
      const lag = /^slotkeeper_lag_seconds\{stream="orders"\} (\S+)$/m.exec(body)
      assert.isNotNull(lag, body)
      assert.isAtLeast(Number(lag![1]), 0.03)
      // the problems fixed, the slot unknown: those series are gone, not stuck at their last value
      yield* Ref.set(current, { ...snapshot(owning), slot: undefined, slotName: undefined })
      const after = (yield* r.get("/metrics")).text
      assert.notInclude(after, "slotkeeper_publication_problems{")
      assert.notInclude(after, "slotkeeper_slot_wal_status{")
      assert.include(after, "slotkeeper_changes_delivered_total{stream=\"orders\"} 13")
      yield* r.dispose
    }))

  it.effect("countErrors: warnings and errors logged by the stream count in slotkeeper_errors_total, info does not", () =>
    Effect.gen(function*() {
      const current = yield* Ref.make(snapshot(owning))
      const r = routes(current)
      yield* r.run(Effect.all([Effect.logWarning("w"), Effect.logError("e"), Effect.logInfo("i")]).pipe(
        Effect.provide(Logger.layer([StreamMetrics.countErrors("orders")]))
      ))
      assert.include((yield* r.get("/metrics")).text, "slotkeeper_errors_total{stream=\"orders\"} 2")
      yield* r.dispose
    }))
})
