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
 * Created if missing (see `internal/schemaSetup`: safe when instances start together; a missing privilege is an error
 * that says what an administrator must run).
 */
import type { Effect } from "effect"
import { Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { ensureTable, qualified } from "../internal/schemaSetup.ts"

export class OwnershipSetupError extends Schema.TaggedError<OwnershipSetupError>()("OwnershipSetupError", {
  message: Schema.String
}) {}

/** `"schema".ownership`. */
export const tableName = (schema: string): string => qualified(schema, "ownership")

export const ensure = (sql: SqlClient, schema: string): Effect.Effect<void, OwnershipSetupError> =>
  ensureTable(sql, schema, "ownership", `
    stream_id            text PRIMARY KEY,
    epoch                bigint NOT NULL,
    mode                 text NOT NULL CHECK (mode IN ('advisory', 'lease')),
    holder               text NOT NULL,
    holder_pid           integer,
    holder_backend_start timestamptz,
    lease_until          timestamptz,
    acquired_at          timestamptz NOT NULL`, (message) => new OwnershipSetupError({ message }))
