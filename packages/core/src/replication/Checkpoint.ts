/**
 * Checkpoint: where the consumer's durable position lives — and the identity it belongs to (system identifier,
 * timeline, slot incarnation), which the resume check compares with the server at every start and reconnect.
 *
 * The slot's `confirmed_flush_lsn` is never taken as the truth: it says what the server will not send again, not what
 * the consumer has. The checkpoint is the truth, and the slot (and the server's flush feedback) only ever follow it.
 *
 * **The default store** keeps the position in slotkeeper's `checkpoints` table in the source database, written with
 * `guarded`: a stale instance cannot move it. Other stores: the CLI's file sink keeps it in its own file; a library
 * user can provide one that writes in the same transaction as their own data (the only way to exactly-once effects).
 *
 * **Details**
 *
 * The position is saved *before* the slot is advanced to it, in a transaction of its own. Advancing a slot is not
 * transactional: were both in one transaction and its commit lost (a dropped connection), the slot would be ahead of
 * the saved position, and the next start would have to refuse with a gap. In this order the slot is never ahead of
 * the checkpoint. A save never moves the position of the same slot backwards.
 *
 * The same holds for a standby's synchronized copy of a failover slot: the slot sync worker copies the primary's
 * position once the standby has flushed WAL up to that position — not up to the later commit of the checkpoint that
 * allowed it. So a save reports where its commit is (`SaveReceipt`), and the slot is advanced only once the standbys
 * in `synchronized_standby_slots` have flushed past it: after a promotion, the checkpoint is never behind the slot.
 */
import { Context, Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { ensureTable, qualified } from "../internal/schemaSetup.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Lsn from "../Lsn.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import type { Ownership, OwnershipLost } from "../ownership/Ownership.ts"
import type { DurablePosition } from "../slot/Resume.ts"

export type { DurablePosition }

export class CheckpointError extends Schema.TaggedError<CheckpointError>()("CheckpointError", {
  message: Schema.String,
  /** A connection fault that may pass (the owner then competes again instead of failing). */
  retryable: Schema.optional(Schema.Boolean)
}) {}

/** A store of the durable position (the `CheckpointStore` service's shape). */
interface CheckpointStoreShape {
  /**
   * The durable position, or `undefined` before the first save. Read at the start of every replication connection
   * (a store may also put itself in order then, e.g. cut what a previous connection left half written), so it is
   * never a position remembered from an earlier one. `OwnershipLost`: the store shows that a newer owner wrote to it.
   */
  readonly load: Effect.Effect<DurablePosition | undefined, CheckpointError | OwnershipLost>
  /** Saves `position` durably; never moves the same slot's position backwards. */
  readonly save: (position: DurablePosition) => Effect.Effect<SaveReceipt, CheckpointError | OwnershipLost | LockBackendError>
}

export interface SaveReceipt {
  /**
   * For a store in the source database: a WAL position at or after the save's commit. A standby has the save once
   * it has flushed this far — `SlotManager` advances a failover slot only then, so that a standby's synchronized
   * copy of the slot is never ahead of the checkpoint the standby has. `undefined` for a store elsewhere.
   */
  readonly walPosition: Lsn.Lsn | undefined
  /**
   * Nothing was saved: the store cannot place the position now (e.g. a file in the middle of a transaction's lines)
   * and the save is tried again later. The position stays unsaved, and is not reported to the server.
   */
  readonly deferred?: true | undefined
}

export class CheckpointStore extends Context.Service<CheckpointStore, CheckpointStoreShape>()("@slotkeeper/core/CheckpointStore") {}

export const table = (schema: string) => qualified(schema, "checkpoints")

/** The default store: slotkeeper's `checkpoints` table in the source database, saved with `own.guarded`. */
export const sourceTable = (own: Ownership["Service"], sql: SqlClient, schema: string): Effect.Effect<CheckpointStore["Service"], CheckpointError> =>
  Effect.gen(function*() {
    yield* ensureTable(sql, schema, "checkpoints", `
      stream_id  text PRIMARY KEY,
      lsn        pg_lsn NOT NULL,
      system_id  text NOT NULL,
      timeline   integer NOT NULL,
      slot_name  text NOT NULL,
      epoch      bigint NOT NULL,
      tx_commit_lsn pg_lsn,
      tx_seq     integer,
      updated_at timestamptz NOT NULL DEFAULT clock_timestamp()`, (message, retryable) => new CheckpointError({ message, retryable }))
    const name = table(schema)
    const failed = (what: string) => (e: Parameters<typeof SqlErrors.describe>[0]) =>
      new CheckpointError({ message: `${what} the checkpoint of stream ${own.streamId}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) })

    const load = sql.unsafe<{ lsn: string; system_id: string; timeline: number; slot_name: string; tx_commit_lsn: string | null; tx_seq: number | null }>(
      `SELECT lsn::text AS lsn, system_id, timeline, slot_name, tx_commit_lsn::text AS tx_commit_lsn, tx_seq FROM ${name} WHERE stream_id = $1`, [own.streamId]
    ).pipe(
      Effect.mapError(failed("reading")),
      Effect.map(([row]) =>
        row === undefined ? undefined : {
          lsn: Lsn.parseUnsafe(row.lsn),
          systemId: row.system_id,
          timeline: row.timeline,
          slotName: row.slot_name,
          inTransaction: row.tx_commit_lsn === null || row.tx_seq === null ? undefined : { commitLsn: Lsn.parseUnsafe(row.tx_commit_lsn), seq: row.tx_seq }
        })
    )

    const save = (p: DurablePosition) =>
      own.guarded(sql.unsafe(
        `INSERT INTO ${name} AS c (stream_id, lsn, system_id, timeline, slot_name, epoch, tx_commit_lsn, tx_seq)
         VALUES ($1, $2::pg_lsn, $3, $4, $5, $6, $7::pg_lsn, $8)
         ON CONFLICT (stream_id) DO UPDATE SET lsn = excluded.lsn, system_id = excluded.system_id, timeline = excluded.timeline,
           slot_name = excluded.slot_name, epoch = excluded.epoch, tx_commit_lsn = excluded.tx_commit_lsn, tx_seq = excluded.tx_seq,
           updated_at = clock_timestamp()
         WHERE c.slot_name <> excluded.slot_name OR c.lsn <= excluded.lsn`,
        [own.streamId, Lsn.format(p.lsn), p.systemId, p.timeline, p.slotName, own.epoch,
          p.inTransaction === undefined ? null : Lsn.format(p.inTransaction.commitLsn), p.inTransaction?.seq ?? null]
      )).pipe(
        // read after the commit: a position at or after it
        Effect.andThen(sql.unsafe<{ lsn: string }>("SELECT pg_current_wal_insert_lsn()::text AS lsn")),
        Effect.map(([row]) => ({ walPosition: row === undefined ? undefined : Lsn.parseUnsafe(row.lsn) })),
        Effect.catchTag("SqlError", (e) => Effect.fail(failed("saving")(e)))
      )
    return { load, save }
  })
