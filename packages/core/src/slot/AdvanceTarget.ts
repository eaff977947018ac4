/**
 * AdvanceTarget: where the persistent slot may be moved, given what the consumer durably acknowledged.
 *
 * The slot's `confirmed_flush_lsn` is what the server will never send again. So it may move only to a position the
 * consumer has acknowledged as durable, held back by the resumable window (keep at least `windowBytes` of WAL behind
 * the acknowledged position, so that downstream readers can resume from older positions), and never backwards.
 * `undefined` means: leave the slot where it is.
 */
import type { Lsn } from "../Lsn.ts"

export const target = (input: {
  /** The consumer's durable, acknowledged position. */
  readonly acknowledged: Lsn
  /** The slot's current confirmed_flush_lsn. */
  readonly current: Lsn
  /** Bytes of WAL to keep behind the acknowledged position (0: none). */
  readonly windowBytes: bigint
}): Lsn | undefined => {
  const held = input.acknowledged - input.windowBytes
  const desired = held < 0n ? 0n : held
  return desired > input.current ? desired : undefined
}
