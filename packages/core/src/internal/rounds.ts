/**
 * Rounds: a component's periodic work (checks, advances, saves) — run every `interval`, where a round that fails on
 * something that may pass is said once per streak of failures and tried again next round, never ending the loop.
 * Whether ownership was lost is never a round's to decide: the supervisor closes the owning scope when it was.
 */
import { type Duration, Effect } from "effect"

export const every = <E extends { readonly message: string }>(
  interval: Duration.Input,
  round: Effect.Effect<void, E>,
  what: string,
  isTransient: (e: E) => boolean = () => true
): Effect.Effect<never, E> => {
  let failing = false
  const once = round.pipe(
    Effect.tap(() => Effect.sync(() => { failing = false })),
    Effect.catchIf(isTransient, (e) =>
      Effect.andThen(failing ? Effect.void : Effect.logWarning(`${what}: ${e.message}; trying again`), Effect.sync(() => { failing = true })))
  )
  return Effect.forever(Effect.andThen(Effect.sleep(interval), once))
}
