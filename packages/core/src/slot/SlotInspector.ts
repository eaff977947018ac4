/**
 * SlotInspector: reads a slot's row from `pg_replication_slots` — only the columns this server has — as
 * `Health.SlotRow`, together with the current WAL position to measure lag against.
 *
 * Reads only; needs no ownership. Columns by version: `wal_status`, `safe_wal_size` (13), `conflicting` (16),
 * `invalidation_reason`, `inactive_since`, `failover`, `synced` (17); with `idle_replication_slot_timeout` (18, in seconds).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Lsn from "../Lsn.ts"
import type { SlotRow } from "./Health.ts"
import { SlotError } from "./PersistentSlot.ts"

export interface Observation {
  readonly row: SlotRow | undefined
  /** pg_current_wal_lsn() (pg_last_wal_receive_lsn() on a standby). */
  readonly currentLsn: Lsn.Lsn
  readonly serverVersion: number
}

/**
 * `idle_replication_slot_timeout` in seconds, `NULL` when 0 (off): an SQL expression, for PostgreSQL 18+ (the setting's
 * unit is minutes; the others are read as the catalog says).
 */
export const idleTimeoutSecondsSql =
  `(SELECT nullif(setting::float8, 0) * CASE unit WHEN 'min' THEN 60 WHEN 'ms' THEN 0.001 WHEN 'h' THEN 3600 WHEN 'd' THEN 86400 ELSE 1 END
      FROM pg_settings WHERE name = 'idle_replication_slot_timeout')`

const optional = <A>(value: A | null | undefined): A | undefined => (value === null ? undefined : value)

export const inspect = (sql: SqlClient, slotName: string): Effect.Effect<Observation, SlotError> =>
  Effect.gen(function*() {
    const [server] = yield* sql.unsafe<{ version: number; current: string }>(
      `SELECT current_setting('server_version_num')::int AS version,
              (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text AS current`
    )
    const version = server?.version ?? 0
    const v16 = version >= 160000
    const v17 = version >= 170000
    const v18 = version >= 180000
    const [r] = yield* sql.unsafe<{
      slot_name: string; active: boolean; active_pid: number | null; temporary: boolean; restart_lsn: string | null
      confirmed_flush_lsn: string | null; wal_status: string | null; safe_wal_size: string | null; conflicting: boolean | null
      invalidation_reason: string | null; inactive_since: string | null; failover: boolean | null; synced: boolean | null
      inactive_seconds: number | null; idle_timeout_seconds: number | null
    }>(
      `SELECT slot_name, active, active_pid, temporary, restart_lsn::text, confirmed_flush_lsn::text, wal_status,
              safe_wal_size::text,
              ${v16 ? "conflicting" : "NULL::bool AS conflicting"},
              ${v17 ? "invalidation_reason, inactive_since::text, failover, synced" : "NULL::text AS invalidation_reason, NULL::text AS inactive_since, NULL::bool AS failover, NULL::bool AS synced"},
              ${v17 ? "extract(epoch FROM clock_timestamp() - inactive_since)::float8" : "NULL::float8"} AS inactive_seconds,
              ${v18 ? idleTimeoutSecondsSql : "NULL::float8"} AS idle_timeout_seconds
         FROM pg_replication_slots WHERE slot_name = $1`,
      [slotName]
    )
    const row: SlotRow | undefined = r === undefined ? undefined : {
      slotName: r.slot_name,
      active: r.active,
      activePid: optional(r.active_pid),
      temporary: r.temporary,
      restartLsn: r.restart_lsn === null ? undefined : Lsn.parseUnsafe(r.restart_lsn),
      confirmedFlush: r.confirmed_flush_lsn === null ? undefined : Lsn.parseUnsafe(r.confirmed_flush_lsn),
      walStatus: optional(r.wal_status),
      safeWalSize: r.safe_wal_size === null ? undefined : BigInt(r.safe_wal_size),
      conflicting: optional(r.conflicting),
      invalidationReason: optional(r.invalidation_reason),
      inactiveSince: optional(r.inactive_since),
      failover: optional(r.failover),
      synced: optional(r.synced),
      inactiveSeconds: optional(r.inactive_seconds),
      idleTimeoutSeconds: optional(r.idle_timeout_seconds)
    }
    return { row, currentLsn: Lsn.parseUnsafe(server?.current ?? "0/0"), serverVersion: version }
  }).pipe(Effect.mapError((e) => new SlotError({ reason: "Query", slotName, message: `reading slot ${slotName}: ${SqlErrors.describe(e)}` })))
