/**
 * Liveness: the pure decision of whether ownership is still held, from the outcomes of ownership checks over time.
 *
 * The holder confirms its ownership every check interval (an advisory heartbeat, a lease renewal). It holds the
 * stream until `confirmedAt + lossDeadline`, where `confirmedAt` is when the last *successful* check *started*:
 * the server's own release clock (idle_session_timeout, lease expiry) starts no earlier than that, so the holder's
 * deadline always falls before the server's release (see OwnershipConfig for the margin).
 *
 * - A check that proves ownership is gone (the lock is not granted to our session, the lease names someone else or
 *   carries another epoch) is a loss at once.
 * - A check that says the session itself is gone (the lock session's connection closed: its session locks went with
 *   it) is a loss at once.
 * - A check that errors in a way that may pass, or does not answer, is a miss: nothing changes, and the deadline
 *   decides. A check that started before the last success cannot extend the deadline.
 *
 * Times are milliseconds on one monotonic clock (Effect's `Clock.monotonicTimeNanos`, so TestClock drives it in
 * tests): a wall clock stepped by NTP must not move a deadline.
 */
import type { ServerInstance } from "./ServerInstance.ts"

export type CheckOutcome =
  /** `server`: the server the check ran on, when it can differ from the acquisition's (a lease renewed through a pool). */
  | { readonly _tag: "Confirmed"; readonly server?: ServerInstance | undefined }
  | { readonly _tag: "NotHeld"; readonly detail: string }
  | { readonly _tag: "SessionGone"; readonly detail: string }
  | { readonly _tag: "Miss"; readonly detail: string }

export type LossReason =
  | { readonly _tag: "NotHeld"; readonly detail: string }
  | { readonly _tag: "SessionGone"; readonly detail: string }
  | { readonly _tag: "DeadlinePassed"; readonly confirmedAt: number; readonly deadlineAt: number; readonly lastMiss: string | undefined }

export interface State {
  readonly confirmedAt: number
  readonly lossDeadlineMs: number
  readonly lastMiss: string | undefined
}

export type Verdict =
  | { readonly _tag: "Held"; readonly state: State; readonly lostAt: number }
  | { readonly _tag: "Lost"; readonly reason: LossReason }

/** Ownership was acquired by a step that started at `acquiredAt`. */
export const initial = (acquiredAt: number, lossDeadlineMs: number): State => ({ confirmedAt: acquiredAt, lossDeadlineMs, lastMiss: undefined })

export const lostAt = (state: State): number => state.confirmedAt + state.lossDeadlineMs

/** The verdict at `now` with no new check outcome. */
export const at = (state: State, now: number): Verdict =>
  now >= lostAt(state)
    ? { _tag: "Lost", reason: { _tag: "DeadlinePassed", confirmedAt: state.confirmedAt, deadlineAt: lostAt(state), lastMiss: state.lastMiss } }
    : { _tag: "Held", state, lostAt: lostAt(state) }

/** The verdict after a check that started at `startedAt` ended with `outcome` at `now`. */
export const onCheck = (state: State, startedAt: number, outcome: CheckOutcome, now: number): Verdict => {
  switch (outcome._tag) {
    case "NotHeld":
    case "SessionGone":
      return { _tag: "Lost", reason: outcome }
    case "Confirmed": {
      // A confirmation counts from its start; it must also have ended before the deadline it would extend: a check
      // that answers after the holder should already have given up does not revive ownership.
      if (now >= lostAt(state)) return at(state, now)
      const next = startedAt > state.confirmedAt ? { ...state, confirmedAt: startedAt, lastMiss: undefined } : state
      return at(next, now)
    }
    case "Miss":
      return at({ ...state, lastMiss: outcome.detail }, now)
  }
}

/** A short, readable account of a loss. */
export const describe = (reason: LossReason): string => {
  switch (reason._tag) {
    case "NotHeld":
      return `ownership is held elsewhere: ${reason.detail}`
    case "SessionGone":
      return `the lock session ended: ${reason.detail}`
    case "DeadlinePassed":
      return `no successful check for ${reason.deadlineAt - reason.confirmedAt} ms (the detection deadline)` +
        (reason.lastMiss !== undefined ? `; last failure: ${reason.lastMiss}` : "")
  }
}
