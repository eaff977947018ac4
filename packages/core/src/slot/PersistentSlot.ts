/**
 * PersistentSlot: the one persistent logical slot of a stream — created on the first run, adopted afterwards, and
 * never silently re-created.
 *
 * **What it guarantees**
 * - The slot is named `slotkeeper_<stream>_<incarnation>` and recorded in slotkeeper's `slots` catalog. A name is
 *   never used twice: slot synchronization to standbys matches slots by name only, and a slot dropped and re-created
 *   under the same name can make a promoted standby skip changes silently. A new incarnation always gets a new number.
 * - Every change is fenced: the catalog is written with `guarded`, the slot itself is created with
 *   `guardedSlotChange` (slot creation refuses a transaction that has written, and is not transactional).
 * - Creation is crash-safe: (1) the incarnation is reserved in the catalog (`creating`), (2) the slot is created,
 *   (3) the row is marked `active`. After a crash between (1) and (3), a slot that exists is adopted; a reserved name
 *   whose slot never came to be is `abandoned`, and the next incarnation is created.
 * - On PostgreSQL 17+ the slot is a failover slot (option, default on). Before 17 that is reported as unavailable,
 *   not failed.
 *
 * **How it fails**: an `active` slot that no longer exists is `SlotMissing` — the position is lost; creating it
 * again would hide that. A slot under the stream's name that is not a persistent pgoutput slot of this database is
 * `SlotMismatch`, never adopted. A slot that exists under our next name without being in the catalog is
 * `SlotNameTaken`.
 */
import { Duration, Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { ensureColumns, ensureTable, qualified } from "../internal/schemaSetup.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import { format as formatLsn, type Lsn, parseUnsafe as parseLsn } from "../Lsn.ts"
import * as Fencing from "../ownership/Fencing.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import type { Ownership, OwnershipLost } from "../ownership/Ownership.ts"

export class SlotError extends Schema.TaggedError<SlotError>()("SlotError", {
  /** `Timeout`: a step the server cancelled at the guard's deadline (a query that may pass with less to do). */
  reason: Schema.Literals(["SlotMissing", "SlotInvalidated", "SlotNameTaken", "SlotMismatch", "Setup", "Query", "Timeout"]),
  slotName: Schema.optional(Schema.String),
  message: Schema.String
}) {}

export interface PersistentSlotOptions {
  readonly streamId: string
  /** `slotkeeper_<stream>`; the incarnation is appended. */
  readonly slotPrefix: string
  readonly schema: string
  /** Create a failover slot on PostgreSQL 17+ (default true). */
  readonly failover?: boolean
  /**
   * How long creating the slot may wait for the transactions running when it starts (it cannot be consistent before
   * they end). Default 10 minutes; not the holder's detection deadline (see `Fencing.lengthenTransaction`).
   */
  readonly createTimeout?: Duration.Input
}

export interface Slot {
  readonly slotName: string
  readonly incarnation: number
  /**
   * Where the slot was created (its consistent point): every transaction that commits after it is delivered; one
   * already running then is not decodable. `undefined` for a slot created before slotkeeper recorded it.
   */
  readonly consistentPoint: Lsn | undefined
  /** True when this call created it; false when it was adopted. */
  readonly created: boolean
  readonly failover: boolean
  /** Set when failover was wanted but the server cannot do it. */
  readonly failoverUnavailable: string | undefined
}

export const catalogTable = (schema: string) => qualified(schema, "slots")

const queryError = (e: SqlError) => new SlotError({ reason: "Query", message: SqlErrors.describe(e) })

export const ensureCatalog = (sql: SqlClient, schema: string): Effect.Effect<void, SlotError> =>
  Effect.gen(function*() {
    const setup = (message: string) => new SlotError({ reason: "Setup", message })
    yield* ensureTable(sql, schema, "slots", `
      stream_id   text NOT NULL,
      incarnation integer NOT NULL,
      slot_name   text NOT NULL UNIQUE,
      state       text NOT NULL CHECK (state IN ('creating', 'active', 'abandoned', 'retired')),
      failover    boolean NOT NULL,
      created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
      consistent_point pg_lsn,
      PRIMARY KEY (stream_id, incarnation)`, setup)
    // a catalog created by an earlier version lacks the slot's consistent point: added (nullable) once
    yield* ensureColumns(sql, schema, "slots", [["consistent_point", "pg_lsn"]], setup)
  })

/** Creates the stream's slot on the first run, adopts it afterwards; see the module comment. Run it as the owner. */
export const ensure = (
  own: Ownership["Service"],
  sql: SqlClient,
  options: PersistentSlotOptions
): Effect.Effect<Slot, SlotError | OwnershipLost | LockBackendError> =>
  Effect.gen(function*() {
    const table = catalogTable(options.schema)
    yield* ensureCatalog(sql, options.schema)
    const [server] = yield* sql.unsafe<{ version: number }>("SELECT current_setting('server_version_num')::int AS version").pipe(Effect.mapError(queryError))
    const wantFailover = options.failover ?? true
    const canFailover = (server?.version ?? 0) >= 170000
    const failoverUnavailable = wantFailover && !canFailover
      ? `failover slots need PostgreSQL 17+ (this server is ${server?.version}); a standby cannot carry this slot through a failover`
      : undefined
    const slotExists = (name: string) =>
      Effect.map(sql.unsafe<{ n: number }>("SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1", [name]), (r) => (r[0]?.n ?? 0) > 0)
        .pipe(Effect.mapError(queryError))
    const setState = (incarnation: number, state: "active" | "abandoned") =>
      own.guarded(sql.unsafe(`UPDATE ${table} SET state = $3 WHERE stream_id = $1 AND incarnation = $2`, [options.streamId, incarnation, state]))
        .pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(e))))

    const rows = yield* sql.unsafe<{ incarnation: number; slot_name: string; state: string; failover: boolean; consistent_point: string | null }>(
      `SELECT incarnation, slot_name, state, failover, consistent_point::text AS consistent_point FROM ${table} WHERE stream_id = $1 ORDER BY incarnation DESC`,
      [options.streamId]
    ).pipe(Effect.mapError(queryError))
    // What exists under a name: only a persistent pgoutput slot of this database is ours to adopt.
    const slotKind = (name: string) =>
      Effect.map(sql.unsafe<{ slot_type: string; plugin: string | null; same_db: boolean; temporary: boolean }>(
        `SELECT slot_type, plugin, database = current_database() AS same_db, temporary FROM pg_replication_slots WHERE slot_name = $1`, [name]
      ), (r) => r[0]).pipe(Effect.mapError(queryError))

    const current = rows.find((r) => r.state === "active" || r.state === "creating")
    if (current !== undefined) {
      const kind = yield* slotKind(current.slot_name)
      const exists = kind !== undefined
      if (kind !== undefined && !(kind.slot_type === "logical" && kind.plugin === "pgoutput" && kind.same_db && !kind.temporary)) {
        return yield* new SlotError({
          reason: "SlotMismatch",
          slotName: current.slot_name,
          message: `replication slot ${current.slot_name} exists but is not the stream's slot (a ${kind.temporary ? "temporary " : ""}${kind.slot_type} ` +
            `slot${kind.plugin ? ` with plugin ${kind.plugin}` : ""}${kind.same_db ? "" : " of another database"}): it was replaced behind ` +
            `slotkeeper's back, so the stream's position is lost. It is not adopted; consumers need a resync with a new incarnation`
        })
      }
      if (exists) {
        if (current.state === "creating") yield* setState(current.incarnation, "active")
        return {
          slotName: current.slot_name,
          incarnation: current.incarnation,
          consistentPoint: current.consistent_point === null ? undefined : parseLsn(current.consistent_point),
          created: false,
          failover: current.failover,
          failoverUnavailable
        }
      }
      if (current.state === "active") {
        return yield* new SlotError({
          reason: "SlotMissing",
          slotName: current.slot_name,
          message: `replication slot ${current.slot_name} of stream ${options.streamId} no longer exists: its position is lost ` +
            `(dropped behind slotkeeper's back, or invalidated and removed). It is not re-created under the same name; ` +
            `consumers need a resync with a new incarnation`
        })
      }
      // reserved, never created (a crash between reserving and creating): that name is not used again
      yield* setState(current.incarnation, "abandoned")
    }

    const incarnation = (rows[0]?.incarnation ?? 0) + 1
    const slotName = `${options.slotPrefix}_${incarnation}`
    const failover = wantFailover && canFailover
    if (yield* slotExists(slotName)) {
      return yield* new SlotError({
        reason: "SlotNameTaken",
        slotName,
        message: `a replication slot named ${slotName} exists but slotkeeper's catalog does not know it: it is not adopted blindly. ` +
          `Drop it if it is a leftover, or check which program created it`
      })
    }
    yield* own.guarded(sql.unsafe(
      `INSERT INTO ${table} (stream_id, incarnation, slot_name, state, failover) VALUES ($1, $2, $3, 'creating', $4)`,
      [options.streamId, incarnation, slotName, failover]
    )).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(e))))
    const createTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.createTimeout ?? "10 minutes"))
    const [created] = yield* own.guardedSlotChange(Effect.andThen(
      Fencing.lengthenTransaction(sql, createTimeoutMs, server?.version ?? 0),
      failover
        ? sql.unsafe<{ lsn: string }>("SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)", [slotName])
        : sql.unsafe<{ lsn: string }>("SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", [slotName])
    )).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(e))))
    const consistentPoint = created === undefined ? undefined : parseLsn(created.lsn)
    yield* own.guarded(sql.unsafe(
      `UPDATE ${table} SET state = 'active', consistent_point = $3::pg_lsn WHERE stream_id = $1 AND incarnation = $2`,
      [options.streamId, incarnation, created?.lsn ?? null]
    )).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(e))))
    return { slotName, incarnation, consistentPoint, created: true, failover, failoverUnavailable }
  })

/**
 * Moves the persistent slot forward to `target` (an `AdvanceTarget`), as the owner. Never backwards: the server
 * refuses that, and `AdvanceTarget` never asks. The advance is not transactional, so it is the guarded effect's only
 * step. On a failover slot it waits for the standbys named in `synchronized_standby_slots`. It decodes all the WAL it
 * passes over, under the guard's deadline: a step the server cancels for that is `Timeout` (see `SlotManager`, which
 * advances a large backlog in smaller steps).
 */
export const advance = (
  own: Ownership["Service"],
  sql: SqlClient,
  slotName: string,
  target: bigint,
  /** Lift the guard's deadline for this step (see `Fencing.lengthenTransaction`). */
  longer?: { readonly timeoutMs: number; readonly serverVersion: number }
): Effect.Effect<string, SlotError | OwnershipLost | LockBackendError> =>
  own.guarded(Effect.andThen(
    longer === undefined ? Effect.void : Fencing.lengthenTransaction(sql, longer.timeoutMs, longer.serverVersion),
    sql.unsafe<{ end_lsn: string }>("SELECT end_lsn::text AS end_lsn FROM pg_replication_slot_advance($1, $2::pg_lsn)", [slotName, formatLsn(target)])
  )).pipe(
    Effect.map((rows) => rows[0]?.end_lsn ?? formatLsn(target)),
    Effect.catchTag("SqlError", (e) =>
      Effect.fail(new SlotError({
        reason: e.reason._tag === "StatementTimeoutError" || SqlErrors.sqlState(e) === "57014" ? "Timeout" : "Query",
        slotName,
        message: `advancing ${slotName}: ${SqlErrors.describe(e)}`
      })))
  )

/** Marks an incarnation `retired` in the catalog, as the owner (after a loss and re-creation, or a cleanup). */
export const retire = (
  own: Ownership["Service"],
  sql: SqlClient,
  schema: string,
  slotName: string
): Effect.Effect<void, SlotError | OwnershipLost | LockBackendError> =>
  own.guarded(sql.unsafe(`UPDATE ${catalogTable(schema)} SET state = 'retired' WHERE stream_id = $1 AND slot_name = $2`, [own.streamId, slotName])).pipe(
    Effect.asVoid,
    Effect.catchTag("SqlError", (e) => Effect.fail(new SlotError({ reason: "Query", slotName, message: `retiring ${slotName}: ${SqlErrors.describe(e)}` })))
  )
