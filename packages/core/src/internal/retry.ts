/**
 * Retry: the schedules slotkeeper retries with, in one place, so that "how long until it tries again" has one
 * answer per kind of failure.
 *
 * - `transient`: a connection or a server that may come back (setup, reconnecting, slot operations, the
 *   supervisor competing again): 200 ms, doubling, at most 5 s apart — quick after a blip, never hammering a server
 *   that is down for a failover.
 * - `capped(base, cap)`: the same shape with other bounds (the http sink: 200 ms to 10 s, jittered).
 * - `lockTimeout`: a catalog lock held by another transaction: 100 ms, doubling, for a bounded number of tries.
 *
 * Which failures are worth retrying is `sqlError.isRetryable`'s decision, not the schedule's.
 */
import { type Duration, Schedule } from "effect"

/** Exponential from `base`, doubling, at most `cap` apart. */
export const capped = (base: Duration.Input, cap: Duration.Input) => Schedule.min([Schedule.exponential(base, 2), Schedule.spaced(cap)])

/** 200 ms, 400 ms, ... at most 5 s apart. */
export const transient = capped("200 millis", "5 seconds")

/** 100 ms, 200 ms, 400 ms, ... (bound it with `times`). */
export const lockTimeout = Schedule.exponential("100 millis", 2)
