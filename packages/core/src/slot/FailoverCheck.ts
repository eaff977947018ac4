/**
 * FailoverCheck: is this stream's slot protected against a primary failover (PostgreSQL 17+), and is anything set
 * up so that decoding will stall silently? Reads only; a `slotkeeper check` preflight and a status probe.
 *
 * **On the primary**
 * - `synchronized_standby_slots` names the standbys' physical slots. Empty: a consumer can get ahead of the standbys,
 *   and after a promotion changes it received may not exist there (a warning where a standby's physical slot exists, else info). Each named slot must exist, be active and valid:
 *   a missing or inactive one makes logical decoding *wait* — a silent stall, not an error.
 * - The stream's slot exists and is a failover slot.
 *
 * **On a standby**
 * - `sync_replication_slots`, `hot_standby_feedback`, `primary_slot_name`, `wal_level = logical` and a `dbname` in
 *   `primary_conninfo` (slot synchronization needs all of them).
 * - The stream's slot is `synced AND NOT temporary AND invalidation_reason IS NULL`: only then is the standby a safe
 *   failover target (a freshly attached standby is not, until the slot has advanced past its start).
 *
 * Before PostgreSQL 17 there are no failover slots: that is reported as unavailable, not as a failure.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import { SlotError } from "./PersistentSlot.ts"

export interface Finding {
  readonly level: "error" | "warn" | "info"
  readonly code:
    | "FailoverUnavailable"
    | "NotLogical"
    | "NoSynchronizedStandbySlots"
    | "StandbySlotMissing"
    | "StandbySlotInactive"
    | "StandbySlotInvalid"
    | "SlotMissing"
    | "SlotNotFailover"
    | "NotAStandby"
    | "SyncSettingMissing"
    | "SlotNotSyncReady"
  readonly message: string
}

export interface Report {
  readonly role: "primary" | "standby"
  readonly ok: boolean
  readonly findings: ReadonlyArray<Finding>
}

const report = (role: Report["role"], findings: Array<Finding>): Report => ({ role, ok: findings.every((f) => f.level !== "error"), findings })

const queryError = (e: SqlError) => new SlotError({ reason: "Query", message: `failover check: ${SqlErrors.describe(e)}` })

const version = (sql: SqlClient) =>
  Effect.map(sql.unsafe<{ v: number; recovery: boolean; wal_level: string }>(
    "SELECT current_setting('server_version_num')::int AS v, pg_is_in_recovery() AS recovery, current_setting('wal_level') AS wal_level"
  ), (rows) => rows[0]!)

/** Checks the primary's side for `slotName`. */
export const primary = (sql: SqlClient, slotName: string): Effect.Effect<Report, SlotError> =>
  Effect.gen(function*() {
    const findings: Array<Finding> = []
    const server = yield* version(sql)
    if (server.wal_level !== "logical") findings.push({ level: "error", code: "NotLogical", message: `wal_level is ${server.wal_level}: set wal_level = logical and restart` })
    if (server.v < 170000) {
      findings.push({ level: "info", code: "FailoverUnavailable", message: `PostgreSQL ${server.v} has no failover slots (17+): a standby cannot carry slot ${slotName} through a failover` })
      return report("primary", findings)
    }
    const [setting] = yield* sql.unsafe<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
    const names = (setting?.v ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    if (names.length === 0) {
      // a risk only where there is a standby to fail over to. Counted by physical slots: only a standby with one can be
      // named in the setting at all. (Walsenders are no guide: a logical one starting up is listed without its database.)
      const [standbys] = yield* sql.unsafe<{ n: number }>("SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_type = 'physical'")
      const fix = "Set it to the standbys' physical slots (e.g. ALTER SYSTEM SET synchronized_standby_slots = 'standby1_slot')"
      findings.push((standbys?.n ?? 0) > 0
        ? {
          level: "warn",
          code: "NoSynchronizedStandbySlots",
          message: `synchronized_standby_slots is empty: the stream can get ahead of the standbys, and after a promotion changes it delivered may be missing there. ${fix}`
        }
        : {
          level: "info",
          code: "NoSynchronizedStandbySlots",
          message: `synchronized_standby_slots is empty, and no standby has a physical slot here. When one does, the stream could get ahead of it: ${fix}`
        })
    }
    for (const name of names) {
      const [s] = yield* sql.unsafe<{ active: boolean; slot_type: string; invalid: string | null }>(
        "SELECT active, slot_type, invalidation_reason AS invalid FROM pg_replication_slots WHERE slot_name = $1", [name])
      if (s === undefined) {
        findings.push({ level: "error", code: "StandbySlotMissing", message: `synchronized_standby_slots names ${name}, which does not exist: logical decoding waits for it forever (a silent stall). Remove it from the setting or create the standby's slot` })
      } else if (s.invalid !== null) {
        findings.push({ level: "error", code: "StandbySlotInvalid", message: `standby slot ${name} is invalidated (${s.invalid}): logical decoding waits for it` })
      } else if (!s.active) {
        findings.push({ level: "error", code: "StandbySlotInactive", message: `standby slot ${name} is not active (its standby is down or disconnected): logical decoding waits until it is back` })
      }
    }
    const [ours] = yield* sql.unsafe<{ failover: boolean }>("SELECT failover FROM pg_replication_slots WHERE slot_name = $1", [slotName])
    if (ours === undefined) findings.push({ level: "error", code: "SlotMissing", message: `replication slot ${slotName} does not exist` })
    else if (!ours.failover) findings.push({ level: "warn", code: "SlotNotFailover", message: `replication slot ${slotName} is not a failover slot: standbys will not carry it` })
    return report("primary", findings)
  }).pipe(Effect.mapError(queryError))

/** Checks a standby's side for `slotName`. */
export const standby = (sql: SqlClient, slotName: string): Effect.Effect<Report, SlotError> =>
  Effect.gen(function*() {
    const findings: Array<Finding> = []
    const server = yield* version(sql)
    if (!server.recovery) {
      findings.push({ level: "error", code: "NotAStandby", message: "this server is not in recovery: it is not a standby" })
      return report("standby", findings)
    }
    if (server.v < 170000) {
      findings.push({ level: "info", code: "FailoverUnavailable", message: `PostgreSQL ${server.v} does not synchronize slots to standbys (17+)` })
      return report("standby", findings)
    }
    const settings = yield* sql.unsafe<{ name: string; setting: string }>(
      "SELECT name, setting FROM pg_settings WHERE name IN ('sync_replication_slots', 'hot_standby_feedback', 'primary_slot_name', 'wal_level', 'primary_conninfo')")
    const get = (name: string) => settings.find((s) => s.name === name)?.setting
    const missing = (name: string, fix: string) => findings.push({ level: "error", code: "SyncSettingMissing", message: `${name}: ${fix}` })
    if (get("sync_replication_slots") !== "on") missing("sync_replication_slots", "set sync_replication_slots = on (or call pg_sync_replication_slots() on demand)")
    if (get("hot_standby_feedback") !== "on") missing("hot_standby_feedback", "set hot_standby_feedback = on, or the primary removes catalog rows the synced slot needs")
    if (!get("primary_slot_name")) missing("primary_slot_name", "set primary_slot_name to this standby's physical slot on the primary")
    if (server.wal_level !== "logical") missing("wal_level", "set wal_level = logical on the standby too")
    const conninfo = get("primary_conninfo")
    if (conninfo === undefined) {
      findings.push({ level: "warn", code: "SyncSettingMissing", message: "primary_conninfo is not readable by this role: cannot check that it names a dbname (slot synchronization needs one)" })
    } else if (!/\bdbname\s*=/.test(conninfo)) {
      missing("primary_conninfo", "add dbname=<database> to primary_conninfo (slot synchronization connects to a database)")
    }
    const [ours] = yield* sql.unsafe<{ synced: boolean; temporary: boolean; invalid: string | null }>(
      "SELECT synced, temporary, invalidation_reason AS invalid FROM pg_replication_slots WHERE slot_name = $1", [slotName])
    if (ours === undefined || !ours.synced || ours.temporary || ours.invalid !== null) {
      findings.push({
        level: "warn",
        code: "SlotNotSyncReady",
        message: ours === undefined
          ? `replication slot ${slotName} is not on this standby yet: it is not a safe failover target`
          : `replication slot ${slotName} is not sync-ready here (synced ${ours.synced}, temporary ${ours.temporary}, invalidation ${ours.invalid ?? "none"}): ` +
            `it becomes ready once the stream has advanced the slot past this standby's start`
      })
    }
    return report("standby", findings)
  }).pipe(Effect.mapError(queryError))
