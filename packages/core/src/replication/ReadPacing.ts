/**
 * ReadPacing: when the replication connection's reader should stop reading the socket for a moment — so that
 * PostgreSQL sends a busy stream in large TCP segments instead of one segment per change.
 *
 * **Why.** The walsender flushes after every message it writes whenever its socket can take it, with `TCP_NODELAY`
 * set (PostgreSQL always sets it). A reader that keeps up with the walsender keeps the receive window open, so each
 * change — about a hundred bytes — travels as its own segment, and the walsender pays the kernel's per-segment cost
 * for every one. On a 2-core machine with a local server that cost is the bottleneck of a large transaction: slotkeeper
 * became *slower* when its reader became faster (one 1,000,000-row transaction: 7.5 s with a reader costing about
 * 3 µs more per change, 9.5 s without; the server's CPU profile showed the difference in `tcp_sendmsg`, `skb_clone`,
 * `tcp_rcv_established`). A reader that pauses 2 ms after every 2,000 messages lets the socket fill: the walsender's
 * writes then queue and leave as large segments, and the same transaction took 7.6–7.7 s. See `docs/benchmarks.md`.
 *
 * **What it guarantees**
 * - Only a sustained rate is paced: a pause is due after `burst` messages only if they arrived within `windowMs`
 *   (by default 2,000 messages within 100 ms: above 20,000 messages a second). A quiet stream never waits.
 * - The added delay is bounded: at most `pauseMs` per `burst` messages (1 µs per message on average by default). The
 *   pause comes after a message was handed on, so the message that completed a burst is not held back by it.
 *
 * A pure decision: the caller passes the monotonic time and does the waiting.
 */

export interface Pacing {
  /** Messages since the last pause (or since pacing began). */
  readonly count: number
  /** When the first of those messages arrived (monotonic milliseconds). */
  readonly since: number
}

export interface PacingOptions {
  readonly burst: number
  readonly windowMs: number
  readonly pauseMs: number
}

export const defaults: PacingOptions = { burst: 2000, windowMs: 100, pauseMs: 2 }

export const initial: Pacing = { count: 0, since: 0 }

/** One message arrived at `now`: the next state, and how long to stop reading before the next one (0: not at all). */
export const onMessage = (state: Pacing, now: number, options: PacingOptions = defaults): { readonly state: Pacing; readonly pauseMs: number } => {
  if (state.count === 0) return { state: { count: 1, since: now }, pauseMs: 0 }
  const count = state.count + 1
  if (count < options.burst) return { state: { count, since: state.since }, pauseMs: 0 }
  // a burst completed: paced only if it came fast; either way the next burst is counted afresh
  return { state: initial, pauseMs: now - state.since <= options.windowMs ? options.pauseMs : 0 }
}
