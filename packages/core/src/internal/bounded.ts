/**
 * Bounded: waiting, at most a deadline, for what can hang on a dead connection.
 *
 * A query in flight on a half-open connection (a partition: nothing arrives, nothing is refused) ends only when the
 * connection does — the client drains it before giving it up — and so does closing a pool that holds one. Giving up
 * ownership, interrupting the owned work and shutting down must not wait for that: after the deadline what is still
 * stopping is left to end in the background, its interruption or close already under way. It can change nothing any
 * more, since every write is guarded and bounded on the server by the same deadline.
 */
import { Effect, type Fiber, type Layer, Scope } from "effect"
import * as LayerModule from "effect/Layer"

/**
 * Waits for `fiber` to end, at most `ms`: whether it ended. It ends by itself, so it works where interruption is
 * masked — in a finalizer, on the way out of an interrupted fiber — which is where it is needed: there it neither
 * cuts the wait short (a graceful stop waits for the owned work's last save) nor waits beyond `ms`. The deadline is a
 * real timer, not the `Clock`'s.
 */
export const awaitAtMost = <A, E>(fiber: Fiber.Fiber<A, E>, ms: number): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    const timer = setTimeout(() => resume(Effect.succeed(false)), ms)
    const remove = fiber.addObserver(() => {
      clearTimeout(timer)
      resume(Effect.succeed(true))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      remove()
    })
  })

/**
 * Builds `layer` (a connection pool) in a scope of its own, closed when the caller's scope closes — waiting for that
 * at most `ms`, then saying that it is left to close in the background.
 */
export const buildClosingWithin = <ROut, E, RIn>(layer: Layer.Layer<ROut, E, RIn>, ms: number, what: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer((exit) =>
      Effect.gen(function*() {
        // detached: its owner is the scope being closed, and the close must outlive this wait if it hangs
        const closing = yield* Effect.forkDetach(Scope.close(scope, exit), { startImmediately: true })
        if (!(yield* awaitAtMost(closing, ms))) {
          yield* Effect.logWarning(`${what} did not close within ${ms} ms (a connection is stuck); leaving it to close in the background`)
        }
      })
    )
    return yield* LayerModule.buildWithScope(layer, scope)
  })
