/**
 * Fleet: many streams over many runners. Every runner holds the same list of streams and reads the same membership
 * (`Membership`: the cluster's live runners); `FleetPlacement` turns the two into one runner per stream, balanced to
 * ±1, and each runner runs the streams placed on it — starting those that arrive, stopping (draining, releasing their
 * ownership) those that leave.
 *
 * **Why placement is only a hint.** Runners read membership a moment apart, a partitioned runner's view is stale,
 * and nothing the cluster holds is a fencing token: two runners can both believe a stream theirs for a while. So a
 * stream runs exactly as `slotkeeper run` runs it — under slotkeeper's own ownership (a session advisory lock or a
 * lease row in the stream's own database) and its epoch, every write guarded. A second runner running the same stream
 * only competes for that lock and waits as a standby; it cannot write. The fleet decides where a stream should run;
 * slotkeeper's lock decides who may write, and the two are independent: the control database and the stream's
 * database can fail separately.
 *
 * **Details**
 * - Membership is read every `pollInterval` (1 s), and a change is acted on once two reads in a row agree: runners
 *   started together register a moment apart, and placing streams over the first one's lonely view started (and
 *   then handed over) most streams twice. The list of streams is a `Stream` of whole lists (a watched file, a
 *   table). Either change re-applies the placement (`FleetPlan`: new streams started, gone ones stopped, changed ones
 *   restarted).
 * - **Losing the control database**: while membership cannot be read the streams here go on, for at most
 *   `expiration` (3 s) after the last good read; then every stream here is stopped. The other runners stop counting
 *   this one once its heartbeat is that old, and take its streams — as standbys until these are released, so no
 *   stream is ever written by two.
 * - **Starting is eager, stopping is not.** A stream placed here starts at once (a killed runner's streams start
 *   elsewhere as soon as membership says so), but a stream running here that placement puts elsewhere is stopped
 *   only once it has been placed elsewhere for `rebalanceDelay` (10 s) — a runner that joins takes its share after
 *   that. Membership flaps under load: the cluster refreshes a runner's heartbeat with its shard locks, under a
 *   deadline of one refresh interval, which a busy control database misses, and the runner drops out of every view
 *   for a while. Acting on each flap at once handed streams back and forth (measured: 30 streams draining a backlog
 *   over 3 runners on 2 cores changed owners 15 times each); with the delay a flap costs only standbys — the others'
 *   copies of the missing runner's streams wait behind its lock and stop when it is counted again.
 * - **Missing from membership, yet reading it** (its own heartbeat late): the runner starts nothing and keeps what it
 *   runs, however long — it is alive and its streams are served; the others' copies wait as standbys. Stopping made a
 *   runner starting 100 streams on a 2-core machine drop everything at the first late heartbeat, start everything
 *   again, and never settle (measured).
 * - A stream's failure never escapes: it is logged and the stream is run again after a backoff (1 s doubling to
 *   30 s), while it is placed here.
 * - `Fleet.here` says which streams run on this runner, since when, and their last error; `Fleet.placement` where
 *   every stream is placed (for `GET /streams`).
 * - **The start gate**: at most `startConcurrency` streams start at once on a runner (a start slot is held from the
 *   stream's start until it streams or stands by, or `startTimeout`). Starting a stream is the expensive part (its
 *   checks, its slot, its lock); 100 started at once on a 2-core machine made every heartbeat miss its deadline — the
 *   streams lost their ownership, and all started again, for ever (measured: no stream streaming after 5 minutes).
 * - Stopping is parallel: streams leaving this runner (a rebalance, SIGTERM) drain and release their ownership all
 *   at once.
 */
import { Clock, Context, Deferred, Duration, Effect, Exit, Layer, Scope, Semaphore, Stream } from "effect"
import { capped } from "../internal/retry.ts"
import * as FleetPlacement from "./FleetPlacement.ts"
import * as FleetPlan from "./FleetPlan.ts"
import { Membership } from "./Membership.ts"

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
  /** How often membership is read (default 1 s). */
  readonly pollInterval?: Duration.Input
  /**
   * How long the streams here go on while membership cannot be read (default 3 s): at most the time after which the
   * other runners stop counting this one (the cluster's shard-lock expiration, its heartbeat's bound).
   */
  readonly expiration?: Duration.Input
  /**
   * How long a stream running here is placed elsewhere before it is stopped here (default 10 s): see the module
   * comment.
   */
  readonly rebalanceDelay?: Duration.Input
}

/** A stream this runner runs. */
export interface Here {
  readonly id: string
  /** Milliseconds since the epoch when it started here. */
  readonly since: number
  /** How many times it was run again here after failing. */
  readonly restarts: number
  readonly lastError: string | undefined
}

/** Where the streams are placed, as this runner sees it. */
export interface Placement {
  /** This runner's name in the membership. */
  readonly self: string
  /** The live runners, as last read; empty while membership is lost. */
  readonly runners: ReadonlyArray<string>
  /** Each listed stream's runner. */
  readonly placed: ReadonlyMap<string, string>
}

export interface FleetShape {
  /** The streams running on this runner. */
  readonly here: Effect.Effect<ReadonlyArray<Here>>
  /** Every stream of the fleet's current list, by id. */
  readonly streams: Effect.Effect<ReadonlyArray<string>>
  readonly placement: Effect.Effect<Placement>
}

export class Fleet extends Context.Service<Fleet, FleetShape>()("@slotkeeper/core/Fleet") {}

/**
 * Runs the streams of `streams`'s lists placed on this runner (see the module comment), for as long as the layer is
 * in use.
 */
export const layer = <E, R>(streams: Stream.Stream<ReadonlyArray<FleetStream<E, R>>>, options: FleetOptions = {}): Layer.Layer<Fleet, never, Membership | Exclude<R, Scope.Scope>> =>
  Layer.effect(Fleet)(Effect.gen(function*() {
    const membership = yield* Membership
    const gate = yield* Semaphore.make(Math.max(1, options.startConcurrency ?? 4))
    const startTimeout = options.startTimeout ?? "15 seconds"
    const pollInterval = options.pollInterval ?? "1 second"
    const expirationMs = Duration.toMillis(Duration.fromInputUnsafe(options.expiration ?? "3 seconds"))
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
    const running = new Map<string, { readonly version: string; readonly scope: Scope.Closeable }>()
    const here = new Map<string, Here>()
    let list: ReadonlyArray<FleetStream<E, R>> = []
    // membership as last read, and when; lost once unread for longer than the expiration
    let runners: ReadonlyArray<string> = []
    let readAt: number | undefined = undefined
    // the read before the last: a change is acted on once two reads agree
    let previous: string | undefined = undefined
    let lost = false
    // since when each stream running here is placed elsewhere
    let elsewhereSince: ReadonlyMap<string, number> = new Map()
    const rebalanceDelayMs = Duration.toMillis(Duration.fromInputUnsafe(options.rebalanceDelay ?? "10 seconds"))
    let missingSaid = false
    const placement = (): Placement => ({ self: membership.self, runners, placed: FleetPlacement.assign(list.map((s) => s.id), runners) })

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
        Effect.catchCause(() => Effect.void)
      )
    }

    // one application at a time: a list's and a membership read's
    const mutex = yield* Semaphore.make(1)
    // set by the layer's finalizer, under the mutex: no stream starts once the fleet is closing
    let closing = false
    const apply = Semaphore.withPermit(mutex, Effect.gen(function*() {
      if (closing) return
      const current = placement()
      const now = yield* Clock.currentTimeMillis
      const present = runners.includes(membership.self)
      const placedHere = new Set(present ? FleetPlacement.on(current.placed, membership.self) : [])
      const decided = FleetPlan.wanted({ placedHere, running: running.keys(), listed: new Set(list.map((s) => s.id)), present, lost, now, elsewhereSince, rebalanceDelayMs })
      const mine = decided.mine
      elsewhereSince = decided.elsewhereSince
      if (!present && !lost && running.size > 0 && !missingSaid) {
        yield* Effect.logWarning(`fleet: this runner (${membership.self}) is missing from membership (its heartbeat is late): the ${running.size} streams here go on, nothing new starts here`)
      }
      missingSaid = !present && !lost
      const desired = list.filter((s) => mine.has(s.id))
      const plan = FleetPlan.plan(new Map([...running].map(([id, r]) => [id, r.version])), desired)
      // stopped first, all at once: a changed stream is stopped before it starts again
      yield* Effect.forEach(plan.stop, (id) =>
        Effect.gen(function*() {
          const r = running.get(id)!
          running.delete(id)
          const why = !list.some((s) => s.id === id) ? "removed from the fleet" : mine.has(id) ? "changed: started again" : `placed on ${current.placed.get(id) ?? "no runner"}`
          yield* Effect.logInfo(`fleet: stream ${id} stops here: ${why}`)
          yield* Scope.close(r.scope, Exit.void)
        }), { concurrency: "unbounded", discard: true })
      for (const id of plan.start) {
        const stream = desired.find((s) => s.id === id)!
        const scope = yield* Scope.make()
        yield* Effect.forkIn(supervised(stream), scope)
        running.set(id, { version: stream.version, scope })
      }
    }))

    const readMembership = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const read = yield* Effect.result(Effect.timeout(membership.runners, Duration.millis(expirationMs)))
      if (read._tag === "Success") {
        if (lost) yield* Effect.logInfo("fleet: membership read again: placing streams")
        lost = false
        readAt = now
        const seen = [...read.success].sort()
        const key = seen.join("\u0000")
        const agreed = key === previous
        previous = key
        if (!agreed) return
        runners = seen
      } else if (!lost && (readAt === undefined || now - readAt > expirationMs)) {
        lost = true
        runners = []
        previous = undefined
        yield* Effect.logError(`fleet: membership unread for more than ${expirationMs} ms: every stream here stops (${String(read.failure)})`)
      }
    })

    yield* Effect.forkScoped(Stream.runForEach(streams, (next) => Effect.andThen(Effect.sync(() => (list = next)), apply)))
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.andThen(readMembership, apply), Effect.sleep(pollInterval))))
    // on shutdown every stream here stops, all at once: each drains and releases its ownership (under the mutex, so
    // an application under way finishes first and none starts a stream after)
    yield* Effect.addFinalizer(() =>
      Semaphore.withPermit(mutex, Effect.suspend(() => {
        closing = true
        return Effect.forEach([...running.values()], (r) => Scope.close(r.scope, Exit.void), { discard: true, concurrency: "unbounded" })
      }))
    )
    return {
      here: Effect.sync(() => [...here.values()].sort((a, b) => a.id.localeCompare(b.id))),
      streams: Effect.sync(() => list.map((s) => s.id)),
      placement: Effect.sync(placement)
    }
  }))
