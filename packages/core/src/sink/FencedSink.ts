/**
 * FencedSink: the contract of a sink that refuses a deposed owner — how slotkeeper's "one owner at a time" reaches
 * past PostgreSQL, to wherever the changes go.
 *
 * **Why**: ownership is proven inside PostgreSQL for every write slotkeeper makes there. A sink outside it cannot see
 * that proof: an owner that was paused past its deadline, cut off, or deposed by an administrator can still hold a
 * batch it had read, and deliver it after its successor has written. Timing cannot close that window (a pause can
 * happen between any check and any write); the sink can, with the fencing token every batch carries.
 *
 * **The contract**
 * - Every write carries a `Fence`: the stream and the ownership epoch of the instance writing (the epoch is bumped,
 *   inside PostgreSQL, at every acquisition, so a newer owner always has a higher one).
 * - The sink keeps, per stream, the highest epoch that has written, and checks and records it *in the same atomic
 *   step as the write* (one transaction, the fence row locked; one event-loop turn of a single-threaded receiver).
 * - A write whose epoch is lower than the recorded one changes nothing and fails with `FencedOut`; an equal or higher
 *   one is accepted and becomes the recorded one. The writer treats `FencedOut` as ownership loss (`asOwnershipLost`):
 *   it acknowledges nothing, gives the stream up and competes again.
 *
 * slotkeeper's http sink speaks this contract over HTTP (`Slotkeeper-Epoch`, `409 Conflict`; see the test kit's
 * `FencingReceiver`); `PgTargetSink` is a worked example in a PostgreSQL target, where the position is kept in the
 * same transaction as the data, which makes the delivery exactly-once in effect.
 */
import { type Effect, Schema } from "effect"
import { OwnershipLost } from "../ownership/Ownership.ts"

/** What a write is made under: the stream and the writer's ownership epoch. */
export interface Fence {
  readonly streamId: string
  readonly epoch: number
}

/** The sink has seen a newer owner of the stream write: this writer has been deposed. Nothing was written. */
export class FencedOut extends Schema.TaggedError<FencedOut>()("FencedOut", {
  streamId: Schema.String,
  epoch: Schema.Number,
  /** The epoch the sink has recorded. */
  current: Schema.Number,
  message: Schema.String
}) {}

export interface FencedSink<Batch, E> {
  /** Writes `batch` under `fence`, atomically with the fence's check (see the module comment). */
  readonly write: (fence: Fence, batch: Batch) => Effect.Effect<void, FencedOut | E>
}

/** A refusal by the sink is the loss of ownership: the supervisor ends the holding and competes again. */
export const asOwnershipLost = (e: FencedOut): OwnershipLost =>
  new OwnershipLost({ streamId: e.streamId, epoch: e.epoch, message: e.message, found: `epoch ${e.current} has written to the sink` })
