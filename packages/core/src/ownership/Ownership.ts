/**
 * Ownership: the service that components needing exclusive ownership of a stream (slot, publication, replication)
 * are given, and only inside the scope in which the stream is held.
 *
 * It guarantees that `guarded(effect)` runs `effect` in a transaction that first proves, inside PostgreSQL, that
 * this instance still owns the stream with this epoch — or fails with `OwnershipLost` and changes nothing. A
 * component never asks "do I still own it?": when ownership is lost, the scope it runs in is closed and its fibers
 * are interrupted (see `Supervisor`).
 */
import { Context, type Effect, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { Held, HolderInfo, LockBackendError } from "./LockBackend.ts"
import type { ServerInstance } from "./ServerInstance.ts"

export class OwnershipLost extends Schema.TaggedError<OwnershipLost>()("OwnershipLost", {
  streamId: Schema.String,
  /** The epoch this instance held (or tried to prove). */
  epoch: Schema.Number,
  message: Schema.String,
  /** What was found instead, e.g. the current epoch and holder, or the pid the lock is granted to. */
  found: Schema.optional(Schema.String)
}) {}

/** What the owned work gets while this instance owns the stream (the `Ownership` service's shape). */
interface OwnershipShape {
  readonly streamId: string
  readonly instanceId: string
  readonly epoch: number
  readonly held: Held
  /**
   * Runs `effect` in a transaction that proves ownership first; see the module comment. `LockBackendError` is a
   * failure of the proof's own statements; `SqlError` one of the transaction (BEGIN / COMMIT).
   */
  readonly guarded: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | OwnershipLost | LockBackendError | SqlError, R>
  /**
   * `guarded` for replication-slot functions that refuse to run in a transaction that has written
   * (`pg_create_logical_replication_slot`, `pg_copy_logical_replication_slot`: "cannot create logical replication slot
   * in transaction that has performed writes"), which the row lock of `guarded` counts as.
   *
   * **Details**
   *
   * The proof is the same, under the stream's write lock, but takes no row lock. The write lock alone fences: every
   * epoch bump takes it first, so no new owner becomes effective while this transaction is open. Slot functions are
   * not transactional — a slot created, advanced or dropped here stays so even if the transaction rolls back — so the
   * slot call must be the last step of `effect`.
   */
  readonly guardedSlotChange: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | OwnershipLost | LockBackendError | SqlError, R>
  /**
   * Succeeds only while ownership was confirmed within the loss deadline, by this process's monotonic clock, and no
   * loss was detected; else fails with `OwnershipLost`. For side effects PostgreSQL cannot fence (a sink write):
   * call it right before each one.
   *
   * **Details**
   *
   * A paused process (SIGSTOP, a frozen VM, a long GC) wakes with its fibers ready to run in any order: the write
   * that was about to happen may run before the watch that would notice the loss. This check reads the clock at the
   * write itself, so a process that wakes after its deadline does not write, whatever ran first. It narrows the
   * window to the instant between the check and the write; the epoch carried with every write (see `FencedSink`)
   * lets the receiver close it.
   */
  readonly assertFresh: Effect.Effect<void, OwnershipLost>
  /**
   * The server ownership was last confirmed on (acquisition, or a lease renewal); the replication connection streams
   * only from that one. `undefined` for a backend that does not report it.
   */
  readonly server: Effect.Effect<ServerInstance | undefined>
}

/** What a lock backend provides for fencing: the two guards, given what is held. */
export interface Guards {
  readonly guarded: (held: Held) => OwnershipShape["guarded"]
  readonly guardedSlotChange: (held: Held) => OwnershipShape["guardedSlotChange"]
}

export class Ownership extends Context.Service<Ownership, OwnershipShape>()("@slotkeeper/core/Ownership") {}

/** What an instance is doing about a stream, as a stream of states (see `Supervisor.status`). */
export type OwnershipStatus =
  | { readonly _tag: "Starting" }
  | { readonly _tag: "Waiting"; readonly since: number; readonly holder: HolderInfo | undefined; readonly lastError: string | undefined }
  | { readonly _tag: "Active"; readonly since: number; readonly epoch: number }
  /** `at`: when the loss was detected (or the stop began), Clock millis. */
  | { readonly _tag: "Stopping"; readonly reason: string; readonly at: number }
  | { readonly _tag: "Failed"; readonly error: string }
