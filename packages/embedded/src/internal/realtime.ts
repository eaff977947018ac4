/**
 * Waiting in real time.
 *
 * The kit drives real processes (postgres, sockets), which move in wall-clock time whatever clock the calling
 * Effect runs with. Its waits therefore use Node timers directly instead of `Effect.sleep`: a test that runs with
 * `TestClock` can still start a cluster without adjusting virtual time, and never hangs on it.
 */
import { Effect } from "effect"

/** Sleeps `ms` of wall-clock time; interruptible (the timer is cleared). */
export const sleepReal = (ms: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(timer))
  })

/**
 * Runs `check` every `intervalMs` until it returns a value other than `undefined`, or fails with `onTimeout()`
 * once `timeoutMs` of wall-clock time has passed.
 */
export const pollUntil = <A, E, R, E2>(
  check: Effect.Effect<A | undefined, E, R>,
  options: { readonly timeoutMs: number; readonly intervalMs?: number; readonly onTimeout: () => E2 }
): Effect.Effect<A, E | E2, R> => {
  const deadline = Date.now() + options.timeoutMs
  const loop: Effect.Effect<A, E | E2, R> = Effect.flatMap(check, (a) => {
    if (a !== undefined) return Effect.succeed(a)
    if (Date.now() >= deadline) return Effect.fail(options.onTimeout())
    return Effect.andThen(sleepReal(options.intervalMs ?? 25), loop)
  })
  return loop
}
