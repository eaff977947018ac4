/**
 * Wait: polling in wall-clock time until something holds — what a test does while a real server, process or stream
 * gets there. A timeout is a defect naming what was awaited (a test's failure, not a value to handle).
 */
import { Effect } from "effect"
import { pollUntil } from "@slotkeeper/embedded/internal"

class TimedOut extends Error {}

/** Runs `probe` every `intervalMs` until it gives a value other than `undefined`; dies after `timeoutMs`. */
export const eventually = <A, E, R>(probe: Effect.Effect<A | undefined, E, R>, timeoutMs: number, what: string, intervalMs = 10): Effect.Effect<A, E, R> =>
  pollUntil(probe, { timeoutMs, intervalMs, onTimeout: () => new TimedOut(`timed out after ${timeoutMs} ms waiting for ${what}`) }).pipe(
    Effect.catchIf((e): e is TimedOut => e instanceof TimedOut, (e) => Effect.die(e))
  ) as Effect.Effect<A, E, R>
