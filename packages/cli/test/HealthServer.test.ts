import { assert, describe, it } from "@effect/vitest"
import type { OwnershipStatus } from "@slotkeeper/core"
import * as HealthServer from "../src/http/HealthServer.ts"
import * as Redact from "../src/Redact.ts"

const capture = { epoch: 3, slotName: "slotkeeper_orders_1", origin: 0x1600000n, from: 0x16b3748n, since: 0 }

const snapshot = (status: OwnershipStatus, capturing = true): HealthServer.Snapshot => ({
  streamId: "orders",
  status,
  capture: capturing ? capture : undefined,
  slotName: "slotkeeper_orders_1",
  slot: { level: "ok", findings: [], retainedBytes: 100n, flushLagBytes: 40n, walStatus: "extended" },
  acknowledgedLsn: 0x16b3748n,
  changes: 12,
  transactions: 3,
  errors: 1
})

describe("HealthServer (pure)", () => {
  it("an owner is active only while it captures (its replication connection streams): before that /health says starting and /health/owner is 503", () => {
    const owning = { _tag: "Active", since: 0, epoch: 3 } as const
    assert.strictEqual(HealthServer.owner(snapshot(owning, false)).status, 503)
    assert.deepStrictEqual(JSON.parse(HealthServer.health(snapshot(owning, false)).body), {
      state: "starting", owner: true, capturing: false, epoch: 3, capture_start_lsn: null, streaming_from: null, failover_ready: null, publication_problems: []
    })
    assert.deepStrictEqual(JSON.parse(HealthServer.owner(snapshot(owning)).body), {
      state: "active", owner: true, capturing: true, epoch: 3, capture_start_lsn: "0/1600000", streaming_from: "0/16B3748", failover_ready: null, publication_problems: []
    })
    // a capture of an earlier holding period does not count
    assert.strictEqual(HealthServer.owner({ ...snapshot(owning), status: { ...owning, epoch: 4 } }).status, 503)
    const metrics = HealthServer.metrics(snapshot(owning, false)).body
    assert.include(metrics, "slotkeeper_capturing{stream=\"orders\"} 0")
    assert.include(HealthServer.metrics(snapshot(owning)).body, "slotkeeper_capture_start_lsn{stream=\"orders\"} 23068672")
  })

  it("/health is 200 while starting, waiting or active, 503 when stopping or failed; /health/owner only while active", () => {
    const cases: Array<[OwnershipStatus, number, number]> = [
      [{ _tag: "Starting" }, 200, 503],
      [{ _tag: "Waiting", since: 0, holder: undefined, lastError: undefined }, 200, 503],
      [{ _tag: "Active", since: 0, epoch: 3 }, 200, 200],
      [{ _tag: "Stopping", reason: "SIGTERM", at: 0 }, 503, 503],
      [{ _tag: "Failed", error: "x" }, 503, 503]
    ]
    for (const [status, health, owner] of cases) {
      assert.strictEqual(HealthServer.health(snapshot(status)).status, health, status._tag)
      assert.strictEqual(HealthServer.owner(snapshot(status)).status, owner, status._tag)
    }
  })
  it("/metrics is Prometheus text with the state, epoch, position, slot lag and wal_status, counters", () => {
    const body = HealthServer.metrics(snapshot({ _tag: "Active", since: 0, epoch: 3 })).body
    for (const line of [
      "slotkeeper_state{stream=\"orders\",state=\"active\"} 1",
      "slotkeeper_state{stream=\"orders\",state=\"waiting\"} 0",
      "slotkeeper_ownership_epoch{stream=\"orders\"} 3",
      "slotkeeper_acknowledged_lsn{stream=\"orders\"} 23803720",
      "slotkeeper_slot_retained_bytes{stream=\"orders\",slot=\"slotkeeper_orders_1\"} 100",
      "slotkeeper_slot_wal_status{stream=\"orders\",slot=\"slotkeeper_orders_1\",wal_status=\"extended\"} 1",
      "# TYPE slotkeeper_changes_delivered_total counter",
      "slotkeeper_errors_total{stream=\"orders\"} 1"
    ]) assert.include(body, line)
  })
  it("publication problems (a repair refused for the application's sake, a renamed table) are in /health and /metrics", () => {
    const problems = [
      { code: "WritesWouldBreak", message: "publication slotkeeper_orders: not changed, because PostgreSQL would then refuse the application's UPDATE on public.t" },
      { code: "TableRenamed", message: "table public.a (subscription \"a\") is now public.a2" },
      { code: "TableRenamed", message: "table public.b (subscription \"b\") is now public.b2" }
    ]
    const s = { ...snapshot({ _tag: "Active", since: 0, epoch: 3 }), publicationProblems: problems }
    assert.deepStrictEqual(JSON.parse(HealthServer.health(s).body).publication_problems, problems)
    const body = HealthServer.metrics(s).body
    assert.include(body, "slotkeeper_publication_problems{stream=\"orders\",code=\"WritesWouldBreak\"} 1")
    assert.include(body, "slotkeeper_publication_problems{stream=\"orders\",code=\"TableRenamed\"} 2")
  })
})

describe("Redact (pure)", () => {
  it("never shows a password, in the user part or in the query", () => {
    assert.strictEqual(Redact.url("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders")
    assert.strictEqual(Redact.url("postgres://db/orders?password=s3cret&sslmode=require"), "postgres://db/orders?password=***&sslmode=require")
    assert.notInclude(Redact.url("not a url s3cret"), "s3cret")
  })

  it("text: in any text, even a URL too malformed to parse, the password and secret parameters are replaced", () => {
    assert.strictEqual(Redact.text(`--sink: "http://ingest:hunter2@bad host/x" is not a URL`), `--sink: "http://ingest:***@bad host/x" is not a URL`)
    assert.strictEqual(Redact.text("postgres://app:p@ss:word@db/x?sslpassword=abc&sslmode=require"), "postgres://app:***@db/x?sslpassword=***&sslmode=require")
    assert.strictEqual(Redact.text("nothing secret in http://host/path?x=1"), "nothing secret in http://host/path?x=1")
  })
})
