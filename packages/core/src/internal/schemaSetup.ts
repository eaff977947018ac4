/**
 * Creating slotkeeper's own tables if missing, safely when several instances start at once.
 *
 * **Details**
 *
 * The table is looked up first, so a role that only uses existing tables needs no CREATE privilege
 * (`CREATE SCHEMA IF NOT EXISTS` checks it even when the schema exists). Creation runs under a transaction-level
 * advisory lock, so that concurrent `CREATE TABLE IF NOT EXISTS` cannot race (it can fail with a unique violation in
 * pg_type). A missing privilege becomes a message that says what an administrator must run.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { SCHEMA_LOCK_NAMESPACE } from "../StreamId.ts"
import * as SqlErrors from "./sqlError.ts"

/** `"schema".table`; both were validated as lowercase identifiers, which need no escaping inside quotes. */
export const qualified = (schema: string, table: string): string => `"${schema}".${table}`

export const ensureTable = <E>(
  sql: SqlClient,
  schema: string,
  table: string,
  columns: string,
  /** `retryable`: the failure may pass (a connection fault), see `SqlErrors.isRetryable`. */
  onError: (message: string, retryable: boolean) => E
): Effect.Effect<void, E> =>
  Effect.gen(function*() {
    const [exists] = yield* sql.unsafe<{ ok: boolean }>("SELECT to_regclass($1) IS NOT NULL AS ok", [qualified(schema, table)])
    if (exists?.ok) return
    yield* SqlErrors.transaction(sql, Effect.gen(function*() {
      yield* sql.unsafe("SELECT pg_advisory_xact_lock($1::int4, 0)", [SCHEMA_LOCK_NAMESPACE])
      const [hasSchema] = yield* sql.unsafe<{ ok: boolean }>("SELECT to_regnamespace($1) IS NOT NULL AS ok", [`"${schema}"`])
      if (!hasSchema?.ok) yield* sql.unsafe(`CREATE SCHEMA "${schema}"`)
      yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${qualified(schema, table)} (${columns})`)
    }))
  }).pipe(
    Effect.catchTag("SqlError", (e) =>
      Effect.gen(function*() {
        const [who] = yield* sql.unsafe<{ role: string; db: string }>("SELECT current_user AS role, current_database() AS db").pipe(
          Effect.orElseSucceed(() => [{ role: "?", db: "?" }])
        )
        const message = e.reason._tag === "AuthorizationError" || SqlErrors.sqlState(e) === "42501"
          ? `role ${who?.role} may not create slotkeeper's table ${qualified(schema, table)} in database ${who?.db}: as an administrator, run ` +
            `CREATE SCHEMA IF NOT EXISTS "${schema}" AUTHORIZATION "${who?.role}" (or GRANT CREATE ON DATABASE to the role), or choose ` +
            `a schema the role owns. (${SqlErrors.describe(e)})`
          : `could not set up ${qualified(schema, table)}: ${SqlErrors.describe(e)}`
        return yield* Effect.fail(onError(message, SqlErrors.isRetryable(e)))
      }))
  )

/**
 * Adds `columns` (name and type, nullable) to a table an earlier version created without them. Read first: a role that
 * does not own the table needs nothing when they exist; when they do not, the error says who must run slotkeeper once.
 */
export const ensureColumns = <E>(
  sql: SqlClient,
  schema: string,
  table: string,
  columns: ReadonlyArray<readonly [name: string, type: string]>,
  onError: (message: string, retryable: boolean) => E
): Effect.Effect<void, E> =>
  Effect.gen(function*() {
    const present = yield* sql.unsafe<{ name: string }>(
      "SELECT attname::text AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
      [qualified(schema, table)]
    )
    for (const [name, type] of columns) {
      if (present.some((c) => c.name === name)) continue
      yield* sql.unsafe(`ALTER TABLE ${qualified(schema, table)} ADD COLUMN IF NOT EXISTS ${name} ${type}`)
    }
  }).pipe(Effect.catchTag("SqlError", (e) =>
    Effect.fail(onError(`could not add columns ${columns.map(([n]) => n).join(", ")} to ${qualified(schema, table)} (run slotkeeper once as the table's owner): ${SqlErrors.describe(e)}`, SqlErrors.isRetryable(e)))))

