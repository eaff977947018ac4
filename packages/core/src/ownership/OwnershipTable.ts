/**
 * OwnershipTable: slotkeeper's record of who owns each stream, and the fencing epoch every guarded write checks.
 *
 * ```sql
 * CREATE TABLE <schema>.ownership (
 *   stream_id            text PRIMARY KEY,
 *   epoch                bigint NOT NULL,      -- bumped on every acquisition, in both lock modes
 *   mode                 text NOT NULL,        -- 'advisory' | 'lease'
 *   holder               text NOT NULL,        -- the holder's instance id
 *   holder_pid           integer,              -- advisory: the lock session's backend pid ...
 *   holder_backend_start timestamptz,          -- ... and its backend_start (a pid can be reused)
 *   lease_until          timestamptz,          -- lease: held until then, by the database's clock
 *   acquired_at          timestamptz NOT NULL  -- when ownership was taken (clock_timestamp(), after any wait)
 * )
 * ```
 *
 * **Details**
 *
 * Created if missing, under a transaction-level advisory lock so that instances starting together do not race on
 * `CREATE TABLE IF NOT EXISTS` (which can fail with a unique violation in pg_type). The schema and table are looked
 * up first: `CREATE SCHEMA IF NOT EXISTS` checks the CREATE privilege even when the schema exists, so a role that
 * only uses an existing schema must not need it. A missing privilege is an error that says what to grant.
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as SqlErrors from "../internal/sqlError.ts"
import { SCHEMA_LOCK_NAMESPACE } from "../StreamId.ts"

export class OwnershipSetupError extends Schema.TaggedError<OwnershipSetupError>()("OwnershipSetupError", {
  message: Schema.String
}) {}

/** `"schema".ownership`; the schema was validated as a lowercase identifier, which needs no escaping inside quotes. */
export const tableName = (schema: string): string => `"${schema}".ownership`

export const ensure = (sql: SqlClient, schema: string): Effect.Effect<void, OwnershipSetupError> =>
  Effect.gen(function*() {
    const [exists] = yield* sql.unsafe<{ ok: boolean }>("SELECT to_regclass($1) IS NOT NULL AS ok", [`"${schema}".ownership`])
    if (exists?.ok) return
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe("SELECT pg_advisory_xact_lock($1::int4, 0)", [SCHEMA_LOCK_NAMESPACE])
      const [hasSchema] = yield* sql.unsafe<{ ok: boolean }>("SELECT to_regnamespace($1) IS NOT NULL AS ok", [`"${schema}"`])
      if (!hasSchema?.ok) yield* sql.unsafe(`CREATE SCHEMA "${schema}"`)
      yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${tableName(schema)} (
        stream_id            text PRIMARY KEY,
        epoch                bigint NOT NULL,
        mode                 text NOT NULL CHECK (mode IN ('advisory', 'lease')),
        holder               text NOT NULL,
        holder_pid           integer,
        holder_backend_start timestamptz,
        lease_until          timestamptz,
        acquired_at          timestamptz NOT NULL
      )`)
    }))
  }).pipe(
    Effect.catchTag("SqlError", (e) =>
      Effect.gen(function*() {
        const [who] = yield* sql.unsafe<{ role: string; db: string }>("SELECT current_user AS role, current_database() AS db").pipe(
          Effect.orElseSucceed(() => [{ role: "?", db: "?" }])
        )
        const message = e.reason._tag === "AuthorizationError" || SqlErrors.sqlState(e) === "42501"
          ? `role ${who?.role} may not create slotkeeper's table ${tableName(schema)} in database ${who?.db}: as an administrator, run ` +
            `CREATE SCHEMA IF NOT EXISTS "${schema}" AUTHORIZATION "${who?.role}" (or GRANT CREATE ON DATABASE to the role), or choose ` +
            `a schema the role owns. (${SqlErrors.describe(e)})`
          : `could not set up ${tableName(schema)}: ${SqlErrors.describe(e)}`
        return yield* new OwnershipSetupError({ message })
      }))
  )
