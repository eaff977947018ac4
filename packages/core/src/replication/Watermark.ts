/**
 * Watermark: the pure decision of which position may be acknowledged — saved as the durable position and then
 * reported to the server as flushed — given what was received, what the consumer acknowledged, and keepalives.
 *
 * **Positions.** A position here is "the first WAL position not yet consumed": the end LSN of an acknowledged
 * commit, one past a consumed non-transactional message, or a keepalive's `wal_end`. That is exactly what the
 * server uses when streaming restarts from it: it skips every transaction whose commit record starts below it (and
 * every non-transactional message below it), and sends the rest. Reporting `end + 1` instead (as
 * pg-logical-replication's `acknowledge` does) is not safe: a transaction whose changes interleaved with ours can
 * commit right at our commit's end, and would be skipped.
 *
 * **What it guarantees**
 * - `acknowledged` only moves forward, and only to a position the consumer acknowledged — or, when nothing received
 *   is unacknowledged and no transaction is open, to a keepalive's `wal_end` or one of slotkeeper's own heartbeat
 *   messages. (A keepalive says everything before `wal_end` was decoded and sent; if all of that was acknowledged,
 *   nothing below it can be lost.) Never while something received is in flight.
 * - An acknowledgement of a position that was never received is refused (`AckAhead`): it would skip changes.
 * - `durable` is what was saved; `toSave` is the next position worth saving. Only `durable` is ever reported.
 *
 * Receipt is recorded at the socket, in order (`begin`, `commit`, `message`), before anything is queued for the
 * consumer; keepalives are handled as they arrive. So a keepalive can never overtake a transaction waiting in a
 * queue.
 */
import { Data } from "effect"
import { format, type Lsn } from "../Lsn.ts"

/** A position inside a transaction: its commit position and a change's `seq` (from 1). */
export interface InTransaction {
  readonly commitLsn: Lsn
  readonly seq: number
}

export interface Watermark {
  /** Saved in the checkpoint store; the only position reported to the server. */
  readonly durable: Lsn
  /** Saved with `durable`: how far the next transaction was consumed. */
  readonly durableInside: InTransaction | undefined
  /** Acknowledged inside the next transaction (partly consumed), maybe not yet saved. */
  readonly inside: InTransaction | undefined
  /** Acknowledged by the consumer (or by an idle keepalive), maybe not yet saved. */
  readonly acknowledged: Lsn
  /** The highest position received that a consumer must acknowledge (a commit's end, past a message). */
  readonly received: Lsn
  /** A transaction began and has not committed (or aborted). */
  readonly open: boolean
}

export class AckAhead extends Data.TaggedError("AckAhead")<{ readonly position: Lsn; readonly received: Lsn; readonly message: string }> {}

export const initial = (durable: Lsn, inside?: InTransaction): Watermark => ({
  durable,
  durableInside: inside,
  inside,
  acknowledged: durable,
  received: durable,
  open: false
})

/** A transaction began (received). */
export const begin = (w: Watermark): Watermark => ({ ...w, open: true })

/** A transaction committed (received); `end` is its end LSN. */
export const commit = (w: Watermark, end: Lsn): Watermark => ({ ...w, open: false, received: end > w.received ? end : w.received })

/** A streamed transaction was aborted (received): nothing of it needs acknowledging. */
export const abort = (w: Watermark): Watermark => ({ ...w, open: false })

/** A non-transactional message for the consumer was received at `lsn`; acknowledging it means `lsn + 1`. */
export const message = (w: Watermark, lsn: Lsn): Watermark => ({ ...w, received: lsn + 1n > w.received ? lsn + 1n : w.received })

const idle = (w: Watermark): boolean => !w.open && w.acknowledged >= w.received

/**
 * A keepalive with `wal_end`, or one of slotkeeper's own heartbeat messages at `position` (pass `lsn + 1`):
 * taken as acknowledged only when nothing received is in flight.
 */
export const keepalive = (w: Watermark, position: Lsn): Watermark =>
  idle(w) && position > w.acknowledged ? { ...w, acknowledged: position, received: position > w.received ? position : w.received } : w

/** The consumer acknowledged everything up to `position`. */
export const ack = (w: Watermark, position: Lsn): Watermark | AckAhead => {
  if (position > w.received) {
    return new AckAhead({
      position,
      received: w.received,
      message: `acknowledged ${format(position)}, but nothing past ${format(w.received)} was received: acknowledging a position ` +
        `that was not delivered would skip changes`
    })
  }
  if (position <= w.acknowledged) return w
  // a transaction that commits below the new position is acknowledged whole: its partial position is done
  const inside = w.inside !== undefined && w.inside.commitLsn < position ? undefined : w.inside
  return { ...w, acknowledged: position, inside }
}

/**
 * The consumer acknowledged the changes up to `seq` of the transaction committing at `commitLsn` (not its end:
 * only a whole transaction moves `acknowledged`). After a restart those changes are not delivered again.
 */
export const ackInside = (w: Watermark, at: InTransaction): Watermark => {
  if (at.commitLsn < w.acknowledged) return w // that transaction is acknowledged whole already
  const current = w.inside
  if (current !== undefined && (current.commitLsn > at.commitLsn || (current.commitLsn === at.commitLsn && current.seq >= at.seq))) return w
  return { ...w, inside: at }
}

const sameInside = (a: InTransaction | undefined, b: InTransaction | undefined) =>
  a === undefined || b === undefined ? a === b : a.commitLsn === b.commitLsn && a.seq === b.seq

/** The position to save next, if any (a whole position, and how far the next transaction was consumed). */
export const toSave = (w: Watermark): { readonly lsn: Lsn; readonly inside: InTransaction | undefined } | undefined =>
  w.acknowledged > w.durable || !sameInside(w.inside, w.durableInside) ? { lsn: w.acknowledged, inside: w.inside } : undefined

/** `position` was saved. */
export const saved = (w: Watermark, position: { readonly lsn: Lsn; readonly inside: InTransaction | undefined }): Watermark =>
  position.lsn >= w.durable ? { ...w, durable: position.lsn, durableInside: position.inside } : w

/** Whether a transaction that commits at `commitLsn` (its commit record's start) was consumed already. */
export const isDuplicate = (durable: Lsn, commitLsn: Lsn): boolean => commitLsn < durable
