/**
 * BackfillProgress: how far each backfill of a stream has come — the table, the last key whose chunk is durable in
 * the sink, rows emitted — kept in slotkeeper's `backfills` table in the source database.
 *
 * **What it guarantees**
 * - Progress only moves by `guarded` writes: a transaction that proves, inside PostgreSQL, that the writer still owns
 *   the stream with its epoch. A deposed owner (paused past its deadline, partitioned, replaced) cannot advance or
 *   complete a backfill: its write fails with `OwnershipLost` and changes nothing.
 * - A chunk's progress is saved only after its rows are durable in the sink, so a new owner — after a handover, a
 *   crash, SIGKILL — resumes after the last chunk saved: nothing is skipped; the chunk in flight is read again (its
 *   rows may reach the sink twice, as `read` lines, which apply idempotently).
 * - A request (`request`) is a plain insert, made by whoever asks (the CLI's `backfill` command, a library call):
 *   asking changes nothing of the stream, and only the owner acts on it. Requesting a table that already has a
 *   backfill running returns that one.
 *
 * **Details**: the last key is stored as the key columns' texts (PostgreSQL's own output, in key order, as a JSON
 * array), compared again by PostgreSQL in the table's key order (`(k1, k2) > ($1, $2)`), never by JavaScript.
 */
import { randomUUID } from "node:crypto"
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { ensureTable, qualified } from "../internal/schemaSetup.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import type { Ownership, OwnershipLost } from "../ownership/Ownership.ts"

export class BackfillProgressError extends Schema.TaggedError<BackfillProgressError>()("BackfillProgressError", {
  message: Schema.String,
  retryable: Schema.optional(Schema.Boolean)
}) {}

export type State = "running" | "done" | "cancelled"

export interface Backfill {
  readonly id: string
  readonly schema: string
  readonly table: string
  /** An extra predicate on the table's rows (`--where`), checked by PostgreSQL when it was requested. */
  readonly where: string | undefined
  /** The key columns' texts of the last row of the last chunk saved; `undefined`: from the start. */
  readonly lastKey: ReadonlyArray<string> | undefined
  readonly rows: number
  readonly chunks: number
  readonly state: State
  /** Why it was cancelled. */
  readonly message: string | undefined
  readonly requestedAt: string
  readonly updatedAt: string
}

interface Row {
  readonly backfill_id: string
  readonly schema_name: string
  readonly table_name: string
  readonly where_clause: string | null
  readonly last_key: ReadonlyArray<string> | string | null
  readonly rows: string | number
  readonly chunks: string | number
  readonly state: State
  readonly message: string | null
  readonly requested_at: string
  readonly updated_at: string
}

const columns = `backfill_id, schema_name, table_name, where_clause, last_key, rows, chunks, state, message,
  to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS requested_at,
  to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at`

const fromRow = (r: Row): Backfill => ({
  id: r.backfill_id,
  schema: r.schema_name,
  table: r.table_name,
  where: r.where_clause ?? undefined,
  lastKey: r.last_key === null ? undefined : typeof r.last_key === "string" ? JSON.parse(r.last_key) : r.last_key,
  rows: Number(r.rows),
  chunks: Number(r.chunks),
  state: r.state,
  message: r.message ?? undefined,
  requestedAt: r.requested_at,
  updatedAt: r.updated_at
})

export const table = (schema: string) => qualified(schema, "backfills")

/** A backfill's id: `bf_` and when it was asked for, and a random part (the `snapshot` of its `read` lines). */
const newId = () => `bf_${Date.now().toString(36)}_${randomUUID().slice(0, 6)}`

/** Creates the table when missing (see `ensureTable`: concurrent starts are safe; a missing privilege says what to run). */
export const setup = (sql: SqlClient, schema: string): Effect.Effect<void, BackfillProgressError> =>
  ensureTable(sql, schema, "backfills", `
    stream_id    text NOT NULL,
    backfill_id  text NOT NULL,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    where_clause text,
    last_key     jsonb,
    rows         bigint NOT NULL DEFAULT 0,
    chunks       bigint NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'cancelled')),
    epoch        bigint,
    message      text,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream_id, backfill_id)`, (message, retryable) => new BackfillProgressError({ message, retryable }))

const failed = (what: string) => (e: Parameters<typeof SqlErrors.describe>[0]) =>
  new BackfillProgressError({ message: `${what}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) })

/** The backfills of `streamId`, oldest first; with `state`, only those. */
export const list = (sql: SqlClient, schema: string, streamId: string, state?: State): Effect.Effect<ReadonlyArray<Backfill>, BackfillProgressError> =>
  sql.unsafe<Row>(
    `SELECT ${columns} FROM ${table(schema)} WHERE stream_id = $1 AND ($2::text IS NULL OR state = $2) ORDER BY requested_at, backfill_id`,
    [streamId, state ?? null]
  ).pipe(Effect.map((rows) => rows.map(fromRow)), Effect.mapError(failed(`reading the backfills of stream ${streamId}`)))

/**
 * Asks for a backfill of `schema.table` (its rows matching `where`, when given): a new one, or the one of that table
 * already running. Unguarded: anyone may ask; only the owner acts on it.
 */
export const request = (
  sql: SqlClient,
  schema: string,
  streamId: string,
  target: { readonly schema: string; readonly table: string; readonly where?: string | undefined }
): Effect.Effect<Backfill, BackfillProgressError> =>
  Effect.gen(function*() {
    yield* setup(sql, schema)
    // one statement: a running backfill of the table wins over a new one (two requests at once make one)
    const rows = yield* sql.unsafe<Row>(
      `WITH running AS (
         SELECT ${columns} FROM ${table(schema)} WHERE stream_id = $1 AND schema_name = $2 AND table_name = $3 AND state = 'running' LIMIT 1
       ), inserted AS (
         INSERT INTO ${table(schema)} (stream_id, backfill_id, schema_name, table_name, where_clause)
         SELECT $1, $4, $2, $3, $5 WHERE NOT EXISTS (SELECT 1 FROM running)
         RETURNING ${columns}
       )
       SELECT * FROM running UNION ALL SELECT * FROM inserted`,
      [streamId, target.schema, target.table, newId(), target.where ?? null]
    ).pipe(Effect.mapError(failed(`requesting a backfill of ${target.schema}.${target.table}`)))
    return fromRow(rows[0]!)
  })

/**
 * Asks for a backfill of `schema.table` unless it ever had one (running, done or cancelled): how `--snapshot initial`
 * backfills each table once, when it first appears in the stream. `true` when one was asked for.
 */
export const requestOnce = (
  sql: SqlClient,
  schema: string,
  streamId: string,
  target: { readonly schema: string; readonly table: string }
): Effect.Effect<boolean, BackfillProgressError> =>
  sql.unsafe<{ backfill_id: string }>(
    `INSERT INTO ${table(schema)} (stream_id, backfill_id, schema_name, table_name)
     SELECT $1, $4, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM ${table(schema)} WHERE stream_id = $1 AND schema_name = $2 AND table_name = $3)
     RETURNING backfill_id`,
    [streamId, target.schema, target.table, newId()]
  ).pipe(Effect.map((rows) => rows.length > 0), Effect.mapError(failed(`requesting the initial backfill of ${target.schema}.${target.table}`)))

/** The owner's writes: each in a guarded transaction (a deposed owner's fails with `OwnershipLost`, changing nothing). */
export interface Writer {
  /** Chunks done and durable in the sink: `lastKey` is the last one's last row's key, `rows` how many they emitted. */
  readonly advance: (id: string, lastKey: ReadonlyArray<string>, rows: number, chunks?: number) => Effect.Effect<void, BackfillProgressError | OwnershipLost | LockBackendError>
  /** Every row read: the backfill is done. */
  readonly complete: (id: string) => Effect.Effect<void, BackfillProgressError | OwnershipLost | LockBackendError>
  /** It cannot go on (its table was dropped, or left the publication): cancelled, saying why. */
  readonly cancel: (id: string, message: string) => Effect.Effect<void, BackfillProgressError | OwnershipLost | LockBackendError>
}

export const writer = (own: Ownership["Service"], sql: SqlClient, schema: string): Writer => {
  const update = (id: string, set: string, params: ReadonlyArray<unknown>, what: string) =>
    own.guarded(sql.unsafe(
      `UPDATE ${table(schema)} SET ${set}, epoch = $3, updated_at = clock_timestamp()
       WHERE stream_id = $1 AND backfill_id = $2 AND state = 'running'`,
      [own.streamId, id, own.epoch, ...params]
    )).pipe(
      Effect.asVoid,
      Effect.catchTag("SqlError", (e) => Effect.fail(failed(`${what} backfill ${id} of stream ${own.streamId}`)(e)))
    )
  return {
    advance: (id, lastKey, rows, chunks = 1) =>
      update(id, "last_key = $4::jsonb, rows = rows + $5, chunks = chunks + $6", [JSON.stringify(lastKey), rows, chunks], "saving the progress of"),
    complete: (id) => update(id, "state = 'done'", [], "completing"),
    cancel: (id, message) => update(id, "state = 'cancelled', message = $4", [message], "cancelling")
  }
}
