import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { pollUntil } from "@slotkeeper/embedded/internal"
import * as PgCluster from "../src/PgCluster.ts"
import type { PgServer } from "@slotkeeper/embedded"
import * as Standby from "../src/Standby.ts"

const majors = [15, 18] as const

describe.each(majors)("Standby on PostgreSQL %i", (major) => {
  it.live("receives a row written on the primary, and after promote() accepts writes on a new timeline", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major })
      yield* primary.query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
      const standby = yield* Standby.make(primary)
      yield* primary.query("INSERT INTO notes VALUES (1, 'written on the primary')")
      yield* standby.waitForReplay
      assert.deepStrictEqual(yield* standby.query("SELECT id, body FROM notes"), [{ id: 1, body: "written on the primary" }])
      const [state] = yield* standby.query<{ recovery: boolean }>("SELECT pg_is_in_recovery() AS recovery")
      assert.isTrue(state?.recovery)
      // a standby refuses writes before promotion
      const refused = yield* Effect.flip(standby.query("INSERT INTO notes VALUES (2, 'too early')"))
      assert.match(refused.message, /read-only transaction/)
      // the primary sees it streaming through its physical slot
      const [slot] = yield* primary.query<{ active: boolean }>("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [standby.physicalSlot])
      assert.isTrue(slot?.active)

      yield* standby.promote
      yield* primary.stop // the old primary must not come back as a second writer
      yield* standby.query("INSERT INTO notes VALUES (2, 'written after promotion')")
      assert.deepStrictEqual(yield* standby.query("SELECT id FROM notes ORDER BY id"), [{ id: 1 }, { id: 2 }])
      const [after] = yield* standby.query<{ recovery: boolean; tli: number }>(
        "SELECT pg_is_in_recovery() AS recovery, timeline_id AS tli FROM pg_control_checkpoint()")
      assert.isFalse(after?.recovery)
      yield* standby.query("CHECKPOINT")
      const [tl] = yield* standby.query<{ tli: number }>("SELECT timeline_id AS tli FROM pg_control_checkpoint()")
      assert.strictEqual(tl?.tli, 2)
    }))
})

// The failover-slot setup of a 17+ standby, on the newest major the kit ships.
describe("Standby failover slots (PostgreSQL 18)", () => {
  const failoverSlot = (primary: PgServer.PgServer) =>
    Effect.gen(function*() {
      yield* primary.query("CREATE TABLE events (id int PRIMARY KEY)")
      yield* primary.query("CREATE PUBLICATION events_pub FOR TABLE events")
      // (slot_name, plugin, temporary, twophase, failover)
      yield* primary.query("SELECT slot_name FROM pg_create_logical_replication_slot('cdc_1', 'pgoutput', false, false, true)")
      yield* primary.query("INSERT INTO events SELECT generate_series(1, 10)")
      yield* consume(primary)
    })

  // What a consumer's progress does: the slot on the primary moves past a running-xacts record logged after the
  // last write, so its catalog_xmin catches up with what the standby reserved. Until then the standby refuses to
  // sync it ("Synchronization could lead to data loss"): a freshly attached standby is not a failover target yet.
  const consume = (primary: PgServer.PgServer) =>
    Effect.gen(function*() {
      const [snapshot] = yield* primary.query<{ lsn: string }>("SELECT pg_log_standby_snapshot()::text AS lsn")
      // the record is not flushed by itself (no commit), and an advance stops at the flush position: wait for the
      // WAL writer to flush it (wal_writer_delay, 200 ms by default)
      yield* pollUntil(
        Effect.map(primary.query<{ ok: boolean }>("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn AS ok", [snapshot!.lsn]),
          (rows) => (rows[0]?.ok ? true : undefined)),
        { timeoutMs: 30_000, intervalMs: 20, onTimeout: () => new Error(`WAL not flushed up to ${snapshot!.lsn} within 30 s`) }
      )
      yield* primary.query("SELECT end_lsn::text FROM pg_replication_slot_advance('cdc_1', $1::pg_lsn)", [snapshot!.lsn])
    })

  const syncedState = (standby: Standby.Standby) =>
    Effect.map(
      standby.query<{ synced: boolean; temporary: boolean; failover: boolean; invalid: string | null }>(
        `SELECT synced, temporary, failover, invalidation_reason AS invalid FROM pg_replication_slots WHERE slot_name = 'cdc_1'`),
      (rows) => rows[0]
    )

  it.live("manual sync: pg_sync_replication_slots() makes the failover slot synced = true, persistent and valid", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const standby = yield* Standby.make(primary, { slotSync: "manual" })
      const [setting] = yield* primary.query<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
      assert.strictEqual(setting?.v, standby.physicalSlot)
      const [inherited] = yield* standby.query<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
      assert.strictEqual(inherited?.v, "") // a promoted copy must not wait for a standby that does not exist
      yield* failoverSlot(primary)
      assert.isUndefined(yield* syncedState(standby)) // nothing synced yet: the worker is off
      yield* standby.waitForReplay
      yield* standby.syncSlots
      assert.deepStrictEqual(yield* syncedState(standby), { synced: true, temporary: false, failover: true, invalid: null })
      // after promotion the synced slot is there, valid, and can be read from
      yield* primary.query("INSERT INTO events VALUES (11)")
      yield* consume(primary)
      yield* standby.waitForReplay
      yield* standby.syncSlots
      yield* standby.promote
      yield* primary.stop
      const [promoted] = yield* standby.query<{ invalid: string | null; temporary: boolean }>(
        "SELECT invalidation_reason AS invalid, temporary FROM pg_replication_slots WHERE slot_name = 'cdc_1'")
      assert.deepStrictEqual(promoted, { invalid: null, temporary: false })
    }))

  it.live("worker sync: the slotsync worker marks the failover slot synced = true", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const standby = yield* Standby.make(primary)
      assert.strictEqual(standby.slotSync, "worker")
      yield* failoverSlot(primary)
      // the worker naps up to 30 s between rounds
      const state = yield* pollUntil(
        Effect.map(syncedState(standby), (s) => (s !== undefined && s.synced && !s.temporary ? s : undefined)),
        { timeoutMs: 90_000, intervalMs: 200, onTimeout: () => new Error(`not synced after 90 s:\n${standby.logTail()}`) }
      )
      assert.deepStrictEqual(state, { synced: true, temporary: false, failover: true, invalid: null })
    }))

  it.live("closing the standby's scope gives the primary back its synchronized_standby_slots and physical slot", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const slot = yield* Effect.scoped(Effect.map(Standby.make(primary, { slotSync: "manual" }), (s) => s.physicalSlot))
      const [setting] = yield* primary.query<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
      assert.strictEqual(setting?.v, "")
      assert.deepStrictEqual(yield* primary.query("SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1", [slot]), [])
    }))
})
