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
 *   acquired_at          timestamptz NOT NULL  -- when ownership was taken (clock_timestamp(), after any wait)
 * );
 * CREATE TABLE <schema>.leases (              -- lease mode: held until lease_until, by the database's clock
 *   stream_id text PRIMARY KEY, holder text NOT NULL, epoch bigint NOT NULL, lease_until timestamptz NOT NULL
 * );
 * ```
 *
 * The lease lives in a row of its own: guarded writes hold the ownership row `FOR SHARE`, and a renewal must not
 * wait for them (a long guarded write would otherwise make the holder miss its own deadline).
 *
 * **Details**
 *
 * Created if missing (see `internal/schemaSetup`: safe when instances start together; a missing privilege is an error
 * that says what an administrator must run).
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { ensureTable, qualified } from "../internal/schemaSetup.ts"

export class OwnershipSetupError extends Schema.TaggedError<OwnershipSetupError>()("OwnershipSetupError", {
  message: Schema.String,
  /** The server is not reachable now (refused, starting up, shutting down): waited for, not fatal. */
  retryable: Schema.optional(Schema.Boolean),
  /** The error it comes from (a `SqlError`), kept for a debug log and a bug report; `message` already says what it means. */
  cause: Schema.optional(Schema.Defect())
}) {}

/** `"schema".ownership`. */
export const tableName = (schema: string): string => qualified(schema, "ownership")
/** `"schema".leases`. */
export const leasesTableName = (schema: string): string => qualified(schema, "leases")

export const ensure = (sql: SqlClient, schema: string): Effect.Effect<void, OwnershipSetupError> =>
  ensureTable(sql, schema, "ownership", `
    stream_id            text PRIMARY KEY,
    epoch                bigint NOT NULL,
    mode                 text NOT NULL CHECK (mode IN ('advisory', 'lease')),
    holder               text NOT NULL,
    holder_pid           integer,
    holder_backend_start timestamptz,
    acquired_at          timestamptz NOT NULL`, (message, retryable) => new OwnershipSetupError({ message, retryable })).pipe(
    Effect.andThen(ensureTable(sql, schema, "leases", `
    stream_id   text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    lease_until timestamptz NOT NULL`, (message, retryable) => new OwnershipSetupError({ message, retryable })))
  )
