import { PgClient } from "@effect/sql-pg"
import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as FailoverCheck from "../src/slot/FailoverCheck.ts"
import { eventually } from "./ownership-helpers.ts"

const clientFor = (url: string) =>
  Effect.map(Layer.build(PgClient.layer({ url: Redacted.make(url) })), (ctx) => Context.get(ctx, SqlClient.SqlClient))
const codes = (r: FailoverCheck.Report) => r.findings.map((f) => f.code)

describe("FailoverCheck (real PostgreSQL)", () => {
  it.live("18 with a synchronizing standby: ok on both sides once the slot is sync-ready", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const standby = yield* Standby.make(primary)
      const p = yield* clientFor(primary.url)
      const s = yield* clientFor(standby.url)
      yield* primary.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_1', 'pgoutput', false, false, true)")
      assert.deepStrictEqual(yield* FailoverCheck.primary(p, "slotkeeper_orders_1"), { role: "primary", ok: true, findings: [] })
      // not yet a safe target
      assert.deepStrictEqual(codes(yield* FailoverCheck.standby(s, "slotkeeper_orders_1")), ["SlotNotSyncReady"])
      // the stream advances the slot past the standby's start: the worker makes it sync-ready
      yield* primary.query("CREATE TABLE t (x int)")
      const [snap] = yield* primary.query<{ lsn: string }>("SELECT pg_log_standby_snapshot()::text AS lsn")
      yield* eventually(Effect.map(primary.query<{ ok: boolean }>("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn AS ok", [snap!.lsn]), (r) => (r[0]?.ok ? true : undefined)), 10_000, "flush")
      yield* primary.query("SELECT end_lsn::text FROM pg_replication_slot_advance('slotkeeper_orders_1', $1::pg_lsn)", [snap!.lsn])
      const ready = yield* eventually(
        Effect.map(FailoverCheck.standby(s, "slotkeeper_orders_1"), (r) => (r.findings.length === 0 ? r : undefined)), 90_000, "sync-ready")
      assert.deepStrictEqual(ready, { role: "standby", ok: true, findings: [] })
    }))

  it.live("a missing or inactive standby slot in synchronized_standby_slots is a stall, reported as an error", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const p = yield* clientFor(primary.url)
      yield* primary.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_1', 'pgoutput', false, false, true)")
      // no standby attached: said, but not a warning
      assert.deepStrictEqual((yield* FailoverCheck.primary(p, "slotkeeper_orders_1")).findings.map((f) => [f.code, f.level]), [["NoSynchronizedStandbySlots", "info"]])
      yield* primary.setConfig("synchronized_standby_slots", "gone_slot")
      const missing = yield* FailoverCheck.primary(p, "slotkeeper_orders_1")
      assert.deepStrictEqual({ ok: missing.ok, codes: codes(missing) }, { ok: false, codes: ["StandbySlotMissing"] })
      assert.match(missing.findings[0]!.message, /silent stall/)
      yield* primary.query("SELECT slot_name FROM pg_create_physical_replication_slot('gone_slot')")
      assert.deepStrictEqual(codes(yield* FailoverCheck.primary(p, "slotkeeper_orders_1")), ["StandbySlotInactive"])
      yield* primary.setConfig("synchronized_standby_slots", null)
      // a standby's physical slot exists, and nothing keeps the stream behind it: a warning
      assert.deepStrictEqual((yield* FailoverCheck.primary(p, "slotkeeper_orders_1")).findings.map((f) => [f.code, f.level]), [["NoSynchronizedStandbySlots", "warn"]])
    }))

  it.live("15: failover slots are reported unavailable, not failed", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 15 })
      const standby = yield* Standby.make(primary)
      const p = yield* FailoverCheck.primary(yield* clientFor(primary.url), "slotkeeper_orders_1")
      assert.deepStrictEqual({ ok: p.ok, codes: codes(p) }, { ok: true, codes: ["FailoverUnavailable"] })
      const s = yield* FailoverCheck.standby(yield* clientFor(standby.url), "slotkeeper_orders_1")
      assert.deepStrictEqual({ ok: s.ok, codes: codes(s) }, { ok: true, codes: ["FailoverUnavailable"] })
    }))
})
