/**
 * Fencing: what every guarded write does, whatever the lock mode — the mode only says what its proof is.
 *
 * A guarded effect runs in one transaction that:
 * 1. bounds itself on the server (`lock_timeout`, `statement_timeout`, `idle_in_transaction_session_timeout` set to
 *    the holder's detection deadline), so a write can never hold the stream past the moment its owner gives up;
 * 2. takes the stream's write lock (transaction level). Every epoch bump takes it first, so while it is held no new
 *    owner becomes effective, and a new owner waits for a write in flight;
 * 3. runs the mode's proof (the lock or lease is ours, with our epoch), with the ownership row read `FOR SHARE`
 *    (`guarded`) or without a row lock (`guardedSlotChange`, for slot functions that refuse a transaction that has
 *    written); a failed proof is `OwnershipLost` and the transaction rolls back;
 * 4. runs the effect.
 *
 * The proof's own SQL failures become `LockBackendError`; the caller's pass through as they are.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import type { LockKey } from "../StreamId.ts"
import type { Held } from "./LockBackend.ts"
import { LockBackendError } from "./LockBackend.ts"
import type { Guards, OwnershipLost } from "./Ownership.ts"

/** A `SqlError` of slotkeeper's own statements, as the lock backend's typed error. */
export const backendError = (operation: string) => (e: SqlError): LockBackendError =>
  new LockBackendError({ operation, message: `${operation}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e })

/**
 * SQL condition on `pg_locks l`: the stream's session advisory lock, granted, in this database. The two parameters
 * name the placeholders holding the lock key's unsigned classid and objid (e.g. `"$1"`, `"$2"`).
 */
export const advisoryLockGranted = (classid: string, objid: string): string =>
  `l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
   AND l.classid = ${classid}::bigint::oid AND l.objid = ${objid}::bigint::oid
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`

/** Server-side bounds of the current transaction: nothing in it may outlive the holder's detection deadline. */
export const boundTransaction = (sql: SqlClient, deadlineMs: number): Effect.Effect<void, SqlError> => {
  const ms = Math.trunc(deadlineMs)
  return Effect.all([
    sql.unsafe(`SET LOCAL lock_timeout = ${ms}`),
    sql.unsafe(`SET LOCAL statement_timeout = ${ms}`),
    sql.unsafe(`SET LOCAL idle_in_transaction_session_timeout = ${ms}`)
  ], { discard: true })
}

/**
 * Lifts the server-side bounds of the current (guarded) transaction to `ms`, for one long step that must not be cut at
 * the holder's detection deadline: creating a slot waits for every transaction running when it starts, and an advance
 * decodes everything it passes over.
 *
 * **Details**: the guard's write lock is held meanwhile, so no new owner becomes effective before the step ends
 * (fencing holds); what is traded is how soon a successor can take over. A holder that dies releases it at once:
 * `client_connection_check_interval` (PostgreSQL 14+) makes the server notice a client that went away during a long
 * statement and cancel it. Only a half-open path keeps it, for at most `ms`.
 */
export const lengthenTransaction = (sql: SqlClient, ms: number, serverVersion: number): Effect.Effect<void, SqlError> => {
  const bound = Math.trunc(ms)
  return Effect.all([
    sql.unsafe(`SET LOCAL lock_timeout = ${bound}`),
    sql.unsafe(`SET LOCAL statement_timeout = ${bound}`),
    ...(serverVersion >= 140000 ? [sql.unsafe("SET LOCAL client_connection_check_interval = 1000")] : [])
  ], { discard: true })
}

/**
 * A mode's proof, run after the bounds and the write lock: succeeds when `held` still owns the stream, else fails
 * with `OwnershipLost`. `rowLock` is `"FOR SHARE OF o"` or `""`, to end its query on the ownership row `o`.
 */
export type Proof = (held: Held, rowLock: "FOR SHARE OF o" | "") => Effect.Effect<void, OwnershipLost | SqlError>

export const makeGuards = (sql: SqlClient, deadlineMs: number, writeLock: LockKey, proof: Proof): Guards => {
  const prove = (held: Held, rowLock: boolean) =>
    Effect.gen(function*() {
      yield* boundTransaction(sql, deadlineMs)
      yield* sql.unsafe("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", [writeLock.namespace, writeLock.key])
      yield* proof(held, rowLock ? "FOR SHARE OF o" : "")
    }).pipe(Effect.mapError((e) => (e._tag === "SqlError" ? backendError("guard")(e) : e)))
  return {
    guarded: (held) => (effect) => SqlErrors.transaction(sql, Effect.andThen(prove(held, true), effect)),
    guardedSlotChange: (held) => (effect) => SqlErrors.transaction(sql, Effect.andThen(prove(held, false), effect))
  }
}
