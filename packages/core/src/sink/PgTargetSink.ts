/**
 * PgTargetSink: a worked example of `FencedSink` — a stream's changes written into a PostgreSQL target, fenced by the
 * ownership epoch, with the stream's durable position kept in the same transaction as the data.
 *
 * **What it guarantees**
 * - A deposed owner writes nothing: every batch runs in one target transaction that first raises the stream's row in
 *   `fence` to the writer's epoch — refusing (`FencedOut`, rolled back) when a higher one is recorded. The row stays
 *   locked until the commit, so the check and the write cannot be separated by another owner's write.
 * - Exactly-once in effect: changes go to `changes`, keyed by `(stream_id, commit_lsn, seq)` (`ON CONFLICT DO
 *   NOTHING`), and the position at the last transaction boundary of the batch goes to `positions` in the same
 *   transaction. Used as the stream's `CheckpointStore` (`checkpoint`), a restart resumes exactly there: a change is in
 *   the target once, whatever was redelivered.
 *
 * **Details**: values are stored as JSON (`new`, `old`), with `NaN` and `±Infinity` as strings and bytes as `\x…` hex
 * text. Tables are created in `schema` when missing. The key `(commit_lsn, seq)` is unique per stream also across a
 * failover, because slotkeeper never delivers past what the promoted standby has (see `StandbyGate`).
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { ensureTable, qualified } from "../internal/schemaSetup.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Lsn from "../Lsn.ts"
import type { ReplicationEvent } from "../replication/Assembler.ts"
import { CheckpointError, type CheckpointStore, type DurablePosition } from "../replication/Checkpoint.ts"
import { asOwnershipLost, type Fence, FencedOut, type FencedSink } from "./FencedSink.ts"

export class TargetError extends Schema.TaggedError<TargetError>()("TargetError", {
  message: Schema.String,
  /** A connection fault that may pass. */
  retryable: Schema.optional(Schema.Boolean)
}) {}

/** One arrival of events, and what the positions in it belong to (the connection's slot, system and timeline). */
export interface Batch {
  readonly events: ReadonlyArray<ReplicationEvent>
  readonly identity: Omit<DurablePosition, "lsn" | "inTransaction">
}

export interface PgTargetSink {
  readonly sink: FencedSink<Batch, TargetError>
  /** The stream's durable position in the target, for a holding period under `fence` (`Delivery`'s `checkpoint`). */
  readonly checkpoint: (fence: Fence) => CheckpointStore["Service"]
}

const replacer = (_key: string, value: unknown): unknown =>
  typeof value === "number" && !Number.isFinite(value) ? String(value) : value instanceof Uint8Array ? `\\x${Buffer.from(value).toString("hex")}` : value

/** The target's tables in `schema` (created when missing), and the sink and store over them. */
export const make = (sql: SqlClient, schema: string): Effect.Effect<PgTargetSink, TargetError> =>
  Effect.gen(function*() {
    const setup = (message: string, retryable: boolean) => new TargetError({ message, retryable })
    yield* ensureTable(sql, schema, "fence", "stream_id text PRIMARY KEY, epoch bigint NOT NULL", setup)
    yield* ensureTable(sql, schema, "positions", `
      stream_id text PRIMARY KEY, lsn pg_lsn NOT NULL, slot_name text NOT NULL, system_id text NOT NULL, timeline integer NOT NULL`, setup)
    yield* ensureTable(sql, schema, "changes", `
      stream_id  text NOT NULL,
      commit_lsn pg_lsn NOT NULL,
      seq        integer NOT NULL,
      epoch      bigint NOT NULL,
      op         text NOT NULL,
      schema_name text NOT NULL,
      table_name text NOT NULL,
      new        jsonb,
      old        jsonb,
      PRIMARY KEY (stream_id, commit_lsn, seq)`, setup)
    const fenceTable = qualified(schema, "fence")
    const positions = qualified(schema, "positions")
    const changes = qualified(schema, "changes")
    const failed = (what: string) => (e: SqlError) => new TargetError({ message: `${what}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) })

    /** Raises the fence to `fence.epoch` (row locked until the commit), or refuses: a newer owner has written. */
    const check = (fence: Fence) =>
      Effect.gen(function*() {
        const raised = yield* sql.unsafe<{ epoch: string }>(
          `INSERT INTO ${fenceTable} AS f (stream_id, epoch) VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE SET epoch = excluded.epoch
            WHERE f.epoch <= excluded.epoch RETURNING epoch::text AS epoch`,
          [fence.streamId, fence.epoch]
        )
        if (raised.length > 0) return
        const [row] = yield* sql.unsafe<{ epoch: string }>(`SELECT epoch::text AS epoch FROM ${fenceTable} WHERE stream_id = $1`, [fence.streamId])
        return yield* new FencedOut({
          streamId: fence.streamId,
          epoch: fence.epoch,
          current: Number(row?.epoch ?? 0),
          message: `the target refused epoch ${fence.epoch} of stream ${fence.streamId}: epoch ${row?.epoch} has written there (a newer owner)`
        })
      })

    const savePosition = (streamId: string, p: Omit<DurablePosition, "inTransaction">) =>
      sql.unsafe(
        `INSERT INTO ${positions} AS p (stream_id, lsn, slot_name, system_id, timeline) VALUES ($1, $2::pg_lsn, $3, $4, $5)
         ON CONFLICT (stream_id) DO UPDATE SET lsn = excluded.lsn, slot_name = excluded.slot_name, system_id = excluded.system_id,
           timeline = excluded.timeline
         WHERE p.slot_name <> excluded.slot_name OR p.lsn <= excluded.lsn`,
        [streamId, Lsn.format(p.lsn), p.slotName, p.systemId, p.timeline]
      )

    const sink: PgTargetSink["sink"] = {
      write: (fence, batch) =>
        SqlErrors.transaction(sql, Effect.gen(function*() {
          yield* check(fence)
          let position: Lsn.Lsn | undefined
          const rows: Array<Record<string, unknown>> = []
          for (const e of batch.events) {
            if (e._tag === "Change") {
              rows.push({ commit_lsn: Lsn.format(e.commitLsn), seq: e.seq, op: e.op, schema: e.schema, table: e.table, new: e.new ?? null, old: e.old ?? null })
            } else if (e._tag === "Commit") position = e.endLsn
            else if (e._tag === "Message" && !e.transactional) position = e.ackPosition
          }
          if (rows.length > 0) {
            // one parameter for the whole batch (a JSON array): one statement, whatever the batch's size
            yield* sql.unsafe(
              `INSERT INTO ${changes} (stream_id, commit_lsn, seq, epoch, op, schema_name, table_name, new, old)
               SELECT $1, (r->>'commit_lsn')::pg_lsn, (r->>'seq')::int, $2, r->>'op', r->>'schema', r->>'table',
                      NULLIF(r->'new', 'null'::jsonb), NULLIF(r->'old', 'null'::jsonb)
                 FROM jsonb_array_elements($3::jsonb) AS r
               ON CONFLICT DO NOTHING`,
              [fence.streamId, fence.epoch, JSON.stringify(rows, replacer)]
            )
          }
          if (position !== undefined) yield* savePosition(fence.streamId, { lsn: position, ...batch.identity })
        })).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(failed("writing to the target")(e))))
    }

    const checkpoint = (fence: Fence): CheckpointStore["Service"] => ({
      load: sql.unsafe<{ lsn: string; slot_name: string; system_id: string; timeline: number }>(
        `SELECT lsn::text AS lsn, slot_name, system_id, timeline FROM ${positions} WHERE stream_id = $1`, [fence.streamId]
      ).pipe(
        Effect.map(([row]) => row === undefined ? undefined : { lsn: Lsn.parseUnsafe(row.lsn), slotName: row.slot_name, systemId: row.system_id, timeline: row.timeline }),
        Effect.mapError((e) => new CheckpointError({ message: `reading the position from the target: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) }))
      ),
      // idle progress (no transaction of its own): fenced like any write
      save: (p) =>
        SqlErrors.transaction(sql, Effect.andThen(check(fence), savePosition(fence.streamId, p))).pipe(
          Effect.as({ walPosition: undefined }),
          Effect.catchTag("SqlError", (e) => Effect.fail(new CheckpointError({ message: `saving the position in the target: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) }))),
          Effect.catchTag("FencedOut", (e) => Effect.fail(asOwnershipLost(e)))
        )
    })

    return { sink, checkpoint }
  })
