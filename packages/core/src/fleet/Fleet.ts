/**
 * Fleet: many streams over many runners. Each stream is a singleton of `effect/cluster`'s `Sharding`, named
 * `slotkeeper/stream/<id>`: the cluster places it on one live runner, and moves it when runners join, leave or die.
 *
 * **Why placement is only a hint.** The cluster's shard lock is a lease (refreshed every few seconds, taken over after
 * it expires) and no fencing token reaches the singleton: during a partition from the control database, or a
 * rebalance, two runners can both believe they hold a shard and both run its singletons. So inside the singleton a
 * stream runs exactly as `slotkeeper run` runs it — under slotkeeper's own ownership (a session advisory lock or a
 * lease row in the stream's own database) and its epoch, every write guarded. A second runner running the same
 * singleton only competes for that lock and waits as a standby; it cannot write. The cluster decides where a stream
 * should run; slotkeeper's lock decides who may write, and the two are independent: the control database and the
 * stream's database can fail separately.
 *
 * **Details**
 * - The list of streams is a `Stream` of whole lists (a watched file, a table): each list is applied by `FleetPlan`
 *   — new streams registered, removed ones unregistered (their singleton stops: the stream drains and releases its
 *   ownership, as on SIGTERM), changed ones re-registered.
 * - A stream's failure never escapes its singleton (the cluster turns a singleton's failure into a defect): it is
 *   logged and the stream is run again after a backoff (1 s doubling to 30 s), while this runner holds its shard.
 * - `Fleet.here` says which streams run on this runner, since when, and their last error (for `GET /streams`).
 * - **The start gate**: at most `startConcurrency` streams start at once on a runner (a start slot is held from the
 *   stream's start until it streams or stands by, or `startTimeout`). Starting a stream is the expensive part (its
 *   checks, its slot, its lock); 100 started at once on a 2-core machine made every heartbeat miss its deadline — the
 *   streams lost their ownership, the runner its shards, and all started again, for ever (measured: no stream
 *   streaming after 5 minutes).
 */
import { Context, Deferred, type Duration, Effect, Exit, Layer, Scope, Semaphore, Stream } from "effect"
import { Sharding } from "effect/cluster/Sharding"
import { capped } from "../internal/retry.ts"
import * as FleetPlan from "./FleetPlan.ts"

/**
 * A stream of the fleet: its id, its configuration's text (a change restarts it), and the stream's whole life —
 * which runs `started` once it streams or waits as a standby (see the start gate).
 */
export interface FleetStream<E, R> {
  readonly id: string
  readonly version: string
  readonly run: (started: Effect.Effect<void>) => Effect.Effect<void, E, R>
}

export interface FleetOptions {
  /** Streams starting at once on this runner (default 4); the others wait for a start slot. */
  readonly startConcurrency?: number
  /** A start slot is given back after this even if the stream has not said it started (default 15 s). */
  readonly startTimeout?: Duration.Input
}

/** A stream this runner runs (its singleton is placed here). */
export interface Here {
  readonly id: string
  /** Milliseconds since the epoch when it started here. */
  readonly since: number
  /** How many times it was run again here after failing. */
  readonly restarts: number
  readonly lastError: string | undefined
}

export interface FleetShape {
  /** The streams whose singletons run on this runner. */
  readonly here: Effect.Effect<ReadonlyArray<Here>>
  /** Every stream of the fleet's current list, by id. */
  readonly streams: Effect.Effect<ReadonlyArray<string>>
}

export class Fleet extends Context.Service<Fleet, FleetShape>()("@slotkeeper/core/Fleet") {}

/** The singleton's name of stream `id`. */
export const singletonName = (id: string): string => `slotkeeper/stream/${id}`

/**
 * Runs the fleet's streams on this runner as the lists of `streams` say (see the module comment), for as long as the
 * layer is in use.
 */
export const layer = <E, R>(streams: Stream.Stream<ReadonlyArray<FleetStream<E, R>>>, options: FleetOptions = {}): Layer.Layer<Fleet, never, Sharding | Exclude<R, Scope.Scope>> =>
  Layer.effect(Fleet)(Effect.gen(function*() {
    const sharding = yield* Sharding
    const gate = yield* Semaphore.make(Math.max(1, options.startConcurrency ?? 4))
    const startTimeout = options.startTimeout ?? "15 seconds"
    /** Runs `run` with a start slot, given back once it says it started (or after the timeout, or when it ends). */
    const gated = (run: (started: Effect.Effect<void>) => Effect.Effect<void, E, R>) =>
      Effect.scoped(Effect.gen(function*() {
        const given = yield* Deferred.make<void>()
        const giveBack = Effect.flatMap(Deferred.succeed(given, undefined), (first) => (first ? Semaphore.release(gate, 1) : Effect.void))
        yield* Semaphore.take(gate, 1)
        yield* Effect.addFinalizer(() => giveBack)
        yield* Effect.forkScoped(Effect.andThen(Effect.sleep(startTimeout), giveBack))
        return yield* run(Effect.asVoid(giveBack))
      }))
    const registered = new Map<string, { readonly version: string; readonly scope: Scope.Closeable }>()
    const here = new Map<string, Here>()
    let listed: ReadonlyArray<string> = []

    const supervised = (stream: FleetStream<E, R>) => {
      let restarts = 0
      const attempt = Effect.suspend(() => {
        here.set(stream.id, { id: stream.id, since: Date.now(), restarts, lastError: here.get(stream.id)?.lastError })
        return gated(stream.run)
      }).pipe(
        Effect.tapCause((cause) =>
          Effect.gen(function*() {
            restarts++
            const message = String(cause).split("\n")[0]
            here.set(stream.id, { ...here.get(stream.id)!, restarts, lastError: message })
            yield* Effect.logWarning(`fleet: stream ${stream.id} failed, run again after a backoff: ${message}`)
          })
        )
      )
      return attempt.pipe(
        Effect.retry(capped("1 second", "30 seconds")),
        Effect.ensuring(Effect.sync(() => here.delete(stream.id))),
        Effect.annotateLogs({ stream: stream.id }),
        // a singleton's failure would be a defect for the cluster: none is left here (the retry never gives up)
        Effect.catchCause(() => Effect.void)
      )
    }

    const apply = (list: ReadonlyArray<FleetStream<E, R>>) =>
      Effect.gen(function*() {
        const current = new Map([...registered].map(([id, r]) => [id, r.version]))
        const plan = FleetPlan.plan(current, list)
        // stopped first: a changed stream is unregistered before it is registered again
        for (const id of plan.stop) {
          const r = registered.get(id)!
          registered.delete(id)
          yield* Scope.close(r.scope, Exit.void)
          yield* Effect.logInfo(`fleet: stream ${id} ${list.some((s) => s.id === id) ? "changed: registered again" : "removed from the fleet"}`)
        }
        for (const id of plan.start) {
          const stream = list.find((s) => s.id === id)!
          const scope = yield* Scope.make()
          yield* Scope.provide(scope)(sharding.registerSingleton(singletonName(id), supervised(stream)))
          registered.set(id, { version: stream.version, scope })
        }
        listed = list.map((s) => s.id)
      })

    yield* Effect.forkScoped(Stream.runForEach(streams, apply))
    // on shutdown every singleton is unregistered: each stream drains and releases its ownership
    yield* Effect.addFinalizer(() => Effect.forEach([...registered.values()], (r) => Scope.close(r.scope, Exit.void), { discard: true, concurrency: "unbounded" }))
    return {
      here: Effect.sync(() => [...here.values()].sort((a, b) => a.id.localeCompare(b.id))),
      streams: Effect.sync(() => listed)
    }
  }))
