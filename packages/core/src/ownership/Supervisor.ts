/**
 * Supervisor: runs the work that needs a stream only while this instance owns the stream, and stops that work,
 * by scope, the moment ownership is lost.
 *
 * **What it guarantees**
 * - The owned work runs in a scope that is a child of the holding: when a check proves the loss, or no check has
 *   succeeded within the detection deadline, that scope is closed and every fiber in it is interrupted, whatever it
 *   is doing. Nothing polls a flag.
 * - Loss is declared by this instance's own clock at `last good check start + lossDeadline`, which the configuration
 *   guarantees to be earlier than the server's release of the lock or lease by at least the safety margin.
 * - A check is never allowed to outrun the deadline: it runs in a forked fiber and only the *wait* for it is timed
 *   out, because interrupting a query on a dead connection can itself hang (see effect's SqlRunnerStorage).
 * - While waiting, the status names the current holder. Acquisition polls (jittered), it never blocks in the server.
 * - After a loss it stays out for `rejoinDelay` (healthy waiters get the first chance, no flapping), then waits to
 *   acquire again (default) — or fails with `OwnershipLost` (`onLoss: "exit"`), for an orchestrator to restart it.
 * - The owned work may prove a loss itself: failing with `OwnershipLost` (a sink that answered "a newer owner wrote
 *   here", a replication connection that reached another server than the one ownership is held on) ends the period
 *   as a loss, exactly like a failed check — never as a fatal error.
 * - `Ownership.assertFresh` lets the owned work refuse a side effect once the deadline has passed by this process's
 *   monotonic clock, even before the watch has run (a process waking from a pause). Deadlines are never measured
 *   with the wall clock, which NTP may step.
 *
 * **How it fails**: backend errors that may pass (connection refused, server restarting) are retried with a capped
 * exponential schedule and shown in the status; others fail `run`. A failure of the owned work releases ownership
 * and fails `run` with that error.
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Random, Result, type Scope, SubscriptionRef } from "effect"
import { SqlError } from "effect/sql/SqlError"
import * as Bounded from "../internal/bounded.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Liveness from "./Liveness.ts"
import type { Held, LockBackend, LockSession } from "./LockBackend.ts"
import { LockBackendError } from "./LockBackend.ts"
import type { OwnershipConfig } from "./OwnershipConfig.ts"
import { type Guards, Ownership, OwnershipLost, type OwnershipStatus } from "./Ownership.ts"
import type { ServerInstance } from "./ServerInstance.ts"
import * as Retry from "../internal/retry.ts"

export interface Supervisor {
  readonly status: SubscriptionRef.SubscriptionRef<OwnershipStatus>
  /**
   * `run` for components written as layers (slot, publication, replication): the layer is built in the owned scope
   * each time ownership is acquired, and torn down — its fibers interrupted, its finalizers run — when it is lost.
   */
  readonly runLayer: <E, R>(
    owned: Layer.Layer<never, E, R>
  ) => Effect.Effect<void, E | OwnershipLost | LockBackendError, Exclude<R, Ownership | Scope.Scope>>
  /**
   * Competes for the stream, runs `owned` while holding it, and repeats after a loss (or fails, by `onLoss`).
   * `owned` gets the `Ownership` service and a scope that closes when ownership ends. When `owned` completes, ownership
   * is released and `run` returns; when it fails, ownership is released and `run` fails with its error.
   */
  readonly run: <E, R>(
    owned: Effect.Effect<unknown, E, R>
  ) => Effect.Effect<void, E | OwnershipLost | LockBackendError, Exclude<R, Ownership | Scope.Scope>>
}

/** The loss that ended a holding period, with when it was detected (wall-clock millis, for the status). */
export interface Loss {
  readonly reason: Liveness.LossReason
  readonly detectedAt: number
}

/** Milliseconds on the monotonic clock: what every deadline is measured with. */
const monotonicMillis = Effect.map(Clock.monotonicTimeNanos, (n) => Number(n / 1_000_000n))

/** What a holding period knows of its own liveness, shared by the watch (writer) and `assertFresh` (reader). */
interface Live {
  state: Liveness.State
  server: ServerInstance | undefined
  /** A loss was detected (by the watch) or proven (by the owned work). */
  lost: boolean
}

/**
 * How the owned work's failure ends the holding, when it is not fatal: its own proof that ownership is gone, or a
 * connection fault that escaped it (a session gone, a server restarting — typed or not). Neither is a reason to stop:
 * the holding ends as a loss, and the instance competes again (or exits, by `onLoss`).
 */
const lostByWork = (cause: Cause.Cause<unknown>, streamId: string, epoch: number): OwnershipLost | undefined => {
  const error = Cause.findErrorOption(cause)
  if (Option.isSome(error) && error.value instanceof OwnershipLost) return error.value
  const failure = Option.isSome(error) ? error.value : Cause.squash(cause)
  // slotkeeper's typed errors made from a SqlError say whether it may pass (`retryable`)
  const connection = (failure instanceof SqlError && SqlErrors.isRetryable(failure)) ||
    (typeof failure === "object" && failure !== null && (failure as { readonly retryable?: unknown }).retryable === true)
  return connection
    ? new OwnershipLost({ streamId, epoch, message: `the owned work failed on a connection fault (${(failure as { readonly message?: string }).message}); competing again` })
    : undefined
}

/** Bounded wait for `effect`, run in a fiber of `scope`: on timeout the fiber is interrupted in the background. */
const withDeadline = <A>(effect: Effect.Effect<A>, ms: number, onTimeout: () => A, scope: Scope.Scope): Effect.Effect<A> =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkIn(effect, scope, { startImmediately: true })
    const result = yield* Fiber.join(fiber).pipe(Effect.timeoutOption(Duration.millis(Math.max(0, ms))))
    if (Option.isSome(result)) return result.value
    yield* Effect.forkIn(Fiber.interrupt(fiber), scope, { startImmediately: true })
    return onTimeout()
  })

// Capped backoff for faults that may pass: 200 ms, 400 ms, ... at most 5 s apart.
const retrySchedule = Retry.transient

/**
 * A supervisor over `backend` (an `AdvisoryLock` or a `LeaseLock`), living as long as the scope: `run` /
 * `runLayer` compete for the stream and run the owned work only while it is held, `status` says where it stands.
 * `StreamOwnership.make` builds one; build it yourself only for a backend of your own.
 *
 * **Details**
 * - Competing polls `backend.acquire` every `acquireInterval` (jittered +-20%), and tries at once when the backend
 *   hears a graceful release (`LockSession.releases`); a held lock is checked every
 *   heartbeat (or renewal) interval, each check in a forked fiber whose *wait* is bounded by the loss deadline.
 * - Ownership is lost when a check proves it, when no check succeeded within the deadline, or when the owned work
 *   fails with `OwnershipLost`; the owned scope is closed then, interrupting every fiber in it.
 * - Faults that may pass are retried with `Retry.transient` (200 ms doubling to 5 s) and shown in the status.
 *
 * **Gotchas**
 * - After a loss the supervisor stays out for `rejoinDelay` before competing again; with `onLoss: "exit"` `run`
 *   fails with `OwnershipLost` instead.
 * - Release and the interruption of a timed-out check may stall on a dead connection: they finish in the
 *   supervisor's own scope, detached from the holding period, which always ends on time.
 */
export const make = (
  config: OwnershipConfig,
  backend: LockBackend,
  guards: Guards
): Effect.Effect<Supervisor, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Long-lived scope for cleanup that may stall on a dead connection (interrupting a timed-out check, a release):
    // it finishes detached from the holding period, which must end on time.
    const outer = yield* Effect.scope
    const status = yield* SubscriptionRef.make<OwnershipStatus>({ _tag: "Starting" })
    const setStatus = (s: OwnershipStatus) => SubscriptionRef.set(status, s)

    const jittered = Effect.map(Random.next, (r) => Duration.millis(config.acquireIntervalMs * (0.8 + 0.4 * r)))

    /** Polls until acquired. Returns what is held and when the successful attempt started. */
    const acquire = (session: LockSession) =>
      Effect.scoped(Effect.gen(function*() {
        const waitingSince = yield* Clock.currentTimeMillis
        // Listening before the first attempt: a release between an attempt and the wait after it is not missed.
        const released = session.releases === undefined ? Effect.never : yield* session.releases
        for (;;) {
          const startedAt = yield* monotonicMillis
          // Bounded: a waiting session on a half-open path would otherwise wait forever. A fault or a timeout ends
          // this period, and `run` retries with a new session (capped backoff).
          const attempt = yield* withDeadline(
            Effect.result(session.tryAcquire),
            config.lossDeadlineMs,
            () => Result.fail(new LockBackendError({ operation: "acquire", message: `acquire: no answer within ${config.lossDeadlineMs} ms; reconnecting`, retryable: true })),
            outer
          )
          if (Result.isFailure(attempt)) return yield* attempt.failure
          if (attempt.success._tag === "Acquired") return { held: attempt.success.held, acquiredAt: startedAt }
          const holder = attempt.success.holder
          if (config.breaker !== undefined && holder?.pid !== undefined &&
            (holder.idleMs ?? 0) > config.breaker.staleAfterMs && (holder.heldMs ?? 0) > config.breaker.gracePeriodMs) {
            yield* Effect.logWarning(`lock breaker: terminating stale holder pid ${holder.pid} (${holder.applicationName ?? "?"}), idle ${holder.idleMs} ms`)
            yield* session.breakHolder(holder).pipe(Effect.catch(() => Effect.succeed(false)))
          }
          yield* setStatus({ _tag: "Waiting", since: waitingSince, holder, lastError: undefined })
          // the next poll, or at once when the holder announces a graceful release
          yield* Effect.raceFirst(Effect.sleep(yield* jittered), released)
        }
      }))

    /**
     * Checks one interval after acquisition and every interval after that; completes with the loss — at the latest
     * exactly at the detection deadline, whether checks fail, hang or are never started. Keeps `live` current.
     */
    const watch = (session: LockSession, held: Held, live: Live) =>
      Effect.gen(function*() {
        const lost = (reason: Liveness.LossReason) =>
          Effect.map(Clock.currentTimeMillis, (detectedAt): Loss => {
            live.lost = true
            return { reason, detectedAt }
          })
        let nextCheck = live.state.confirmedAt + config.checkIntervalMs
        for (;;) {
          const before = yield* monotonicMillis
          const wakeAt = Math.min(nextCheck, Liveness.lostAt(live.state))
          if (wakeAt > before) yield* Effect.sleep(Duration.millis(wakeAt - before))
          const startedAt = yield* monotonicMillis
          const due = Liveness.at(live.state, startedAt)
          if (due._tag === "Lost") return yield* lost(due.reason)
          const outcome = yield* withDeadline(
            session.check(held),
            Liveness.lostAt(live.state) - startedAt,
            (): Liveness.CheckOutcome => ({ _tag: "Miss", detail: "the check did not answer before the detection deadline" }),
            outer
          )
          const now = yield* monotonicMillis
          const verdict = Liveness.onCheck(live.state, startedAt, outcome, now)
          if (verdict._tag === "Lost") return yield* lost(verdict.reason)
          live.state = verdict.state
          if (outcome._tag === "Confirmed" && outcome.server !== undefined) live.server = outcome.server
          nextCheck = startedAt + config.checkIntervalMs
        }
      })

    /**
     * Interrupts the owned work and waits for it to stop, at most the detection deadline (see `Bounded`: a query stuck
     * on a dead connection must keep neither ownership from being given up nor the process from stopping). Once.
     */
    const stopWork = (work: Fiber.Fiber<unknown, unknown>, stopping: { requested: boolean }) =>
      Effect.gen(function*() {
        if (stopping.requested) return
        stopping.requested = true
        yield* Effect.sync(() => work.interruptUnsafe())
        if (!(yield* Bounded.awaitAtMost(work, config.lossDeadlineMs))) {
          yield* Effect.logWarning(`stream ${config.streamId}: the owned work did not stop within ${config.lossDeadlineMs} ms (a query that does not answer: a dead connection, or a statement the server did not cancel); leaving it to end in the background`)
        }
      })

    const run = <E, R>(owned: Effect.Effect<unknown, E, R>) => {
      // One holding period: open a session, acquire, run `owned` until it ends or ownership is lost.
      const period = Effect.scoped(Effect.gen(function*() {
        const session = yield* backend.open
        const { acquiredAt, held } = yield* acquire(session)
        // Released when the period ends for any reason other than a proven loss (graceful handover, shutdown).
        let releasable = true
        // Bounded: over a dead path the release cannot complete, and the server's bound releases us anyway.
        yield* Effect.addFinalizer(() =>
          releasable
            ? withDeadline(
              Effect.andThen(session.release(held), Effect.logInfo(`ownership of stream ${config.streamId} released (epoch ${held.epoch})`)),
              config.checkIntervalMs,
              () => undefined,
              outer
            )
            : Effect.void
        )
        const since = yield* Clock.currentTimeMillis
        yield* setStatus({ _tag: "Active", since, epoch: held.epoch })
        yield* Effect.logInfo(`ownership of stream ${config.streamId} acquired (epoch ${held.epoch})`)

        const loss = yield* Deferred.make<Loss>()
        const live: Live = { state: Liveness.initial(acquiredAt, config.lossDeadlineMs), server: held.server, lost: false }
        yield* Effect.forkScoped(Effect.flatMap(watch(session, held, live), (l) => Deferred.succeed(loss, l)))
        const stale = (message: string) => new OwnershipLost({ streamId: config.streamId, epoch: held.epoch, message })
        const service = Ownership.of({
          streamId: config.streamId,
          instanceId: config.instanceId,
          epoch: held.epoch,
          held,
          guarded: guards.guarded(held),
          guardedSlotChange: guards.guardedSlotChange(held),
          // the watch's own decision, taken at the write: a paused process wakes past its deadline before the watch runs
          assertFresh: Effect.flatMap(monotonicMillis, (now) => {
            if (live.lost) return Effect.fail(stale(`ownership of stream ${config.streamId} (epoch ${held.epoch}) was lost: not writing`))
            const verdict = Liveness.at(live.state, now)
            return verdict._tag === "Held" ? Effect.void : Effect.fail(stale(
              `ownership of stream ${config.streamId} (epoch ${held.epoch}) was last confirmed ${now - live.state.confirmedAt} ms ago, ` +
                `past the ${config.lossDeadlineMs} ms deadline (was this process paused?): not writing`
            ))
          }),
          server: Effect.sync(() => live.server)
        })
        // However the period ends (loss, shutdown, handover), the owned work stops — its finalizers done — *before*
        // ownership is released: finalizers run in reverse order, and the release was registered first.
        // The period owns the work explicitly, through that finalizer, rather than as a child fiber: a child that is
        // still stopping (a query stuck on a dead connection, see `stopWork`) would hold up every fiber above it on
        // exit, and the process with them. Forked and given its finalizer in one uninterruptible step, so never leaked.
        const stopping = { requested: false }
        const work = yield* Effect.uninterruptible(Effect.gen(function*() {
          const fiber = yield* Effect.forkDetach(
            Effect.scoped(owned).pipe(Effect.provideService(Ownership, service)),
            { startImmediately: true }
          )
          yield* Effect.addFinalizer(() => stopWork(fiber, stopping))
          return fiber
        }))
        const ended = yield* Effect.raceFirst(
          Effect.map(Fiber.await(work), (exit) => ({ _tag: "WorkEnded", exit }) as const),
          Effect.map(Deferred.await(loss), (l) => ({ _tag: "Lost", loss: l }) as const)
        )
        if (ended._tag === "Lost") {
          const message = Liveness.describe(ended.loss.reason)
          yield* setStatus({ _tag: "Stopping", reason: message, at: ended.loss.detectedAt })
          yield* Effect.logWarning(`ownership of stream ${config.streamId} lost (epoch ${held.epoch}): ${message}`)
          // Structural: the owned scope closes now, interrupting every fiber in it.
          yield* stopWork(work, stopping)
          releasable = ended.loss.reason._tag === "DeadlinePassed" // a proven loss has nothing left to release
          return new OwnershipLost({ streamId: config.streamId, epoch: held.epoch, message })
        }
        const proven = Exit.isFailure(ended.exit) ? lostByWork(ended.exit.cause, config.streamId, held.epoch) : undefined
        if (proven !== undefined) {
          // the owned work proved the loss (a sink saw a newer owner, another server was reached): a loss, not a failure
          live.lost = true
          yield* setStatus({ _tag: "Stopping", reason: proven.message, at: yield* Clock.currentTimeMillis })
          yield* Effect.logWarning(`ownership of stream ${config.streamId} lost (epoch ${held.epoch}): ${proven.message}`)
          return proven
        }
        yield* setStatus({ _tag: "Stopping", reason: "the owned work ended", at: yield* Clock.currentTimeMillis })
        if (Exit.isFailure(ended.exit)) return yield* Effect.failCause(ended.exit.cause)
        return "done" as const
      }))

      // TypeScript cannot see that Exclude<Exclude<Exclude<R, Scope>, Ownership>, Scope> is Exclude<R, Ownership | Scope>
      // for a generic R; this cast states only that, the error and success types are checked.
      const periodR = period as Effect.Effect<OwnershipLost | "done", E | LockBackendError, Exclude<R, Ownership | Scope.Scope>>
      const loop: Effect.Effect<void, E | OwnershipLost | LockBackendError, Exclude<R, Ownership | Scope.Scope>> = periodR.pipe(
        Effect.tapError((e) =>
          e instanceof LockBackendError && e.retryable
            ? Effect.flatMap(Clock.currentTimeMillis, (since) => setStatus({ _tag: "Waiting", since, holder: undefined, lastError: e.message }))
            : Effect.void
        ),
        Effect.retry({
          schedule: retrySchedule,
          while: (e) => e instanceof LockBackendError && e.retryable
        }),
        Effect.flatMap((lost): Effect.Effect<void, E | OwnershipLost | LockBackendError, Exclude<R, Ownership | Scope.Scope>> => {
          if (lost === "done") return Effect.void // the owned work completed: ownership was released
          if (config.onLoss === "exit") return Effect.fail(lost)
          // Healthy waiters get the first chance at the stream this instance just lost.
          return Effect.andThen(Effect.sleep(Duration.millis(config.rejoinDelayMs)), loop)
        })
      )
      return loop.pipe(
        // an interruption is a shutdown, not a failure
        Effect.tapCause((cause) => (Cause.hasInterruptsOnly(cause) ? Effect.void : setStatus({ _tag: "Failed", error: Cause.pretty(cause) }))),
        Effect.ensuring(Effect.suspend(() =>
          Effect.flatMap(SubscriptionRef.get(status), (s) =>
            s._tag === "Failed" ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (at) => setStatus({ _tag: "Stopping", reason: "stopped", at })))
        ))
      )
    }

    return { status, run, runLayer: (owned) => run(Layer.launch(owned)) }
  })
