/**
 * PublicationManager: the one actor that owns a stream's publication. Subscriptions are added and removed through it;
 * it keeps the publication equal to what all live subscriptions need, and only while this instance owns the stream.
 *
 * **What it guarantees**
 * - Requests go to a mailbox. A burst is coalesced: after the first request the actor waits `debounce`, takes every
 *   request that arrived, and applies them all in **one** guarded transaction (`PublicationBackend.apply`). Every
 *   caller whose request was in it gets the result: success, or the transaction's typed error (then nothing of the
 *   batch was applied).
 * - A subscription that fails its checks (`Subscription.check`, then the server's `Validation`) is refused with its
 *   own `SubscriptionInvalid` and is not part of the batch; the others go ahead.
 * - Subscriptions are reference-counted by table (see `Desired`); adding an id again with the same spec is a no-op,
 *   with another spec a `Conflict`; removing an unknown id is a no-op. `sync` replaces the whole set at once (for
 *   subscriptions that come from configuration): all of it is validated before any of it is applied.
 * - Subscriptions follow tables, not names (each records its table's OID): on start and before every drift check,
 *   a table that was renamed (or whose schema was) stays published under its new name, and that is reported
 *   (`TableRenamed`); a table that was dropped is reported loudly (`TableDropped`, an error) and its subscription
 *   removed — a new table that took the old name is never published by it (only a configured and checked one is). With `configured` (a set from configuration) that set is made the
 *   whole set at once, validated first — the saved set is never re-applied before it — unless an instance started
 *   later has put its own set in place: then that is kept and the disagreement reported (`Configuration`), so that
 *   instances of two versions taking turns never flip the publication. Otherwise the recovered subscriptions are
 *   reconciled as a whole. Then, on a timer, the publication is compared with the desired one (tables, column lists,
 *   filters, what it publishes, its owner, whether it still exists); drift is reported in `status`, and repaired
 *   (policy `repair`, default) by the same guarded reconcile.
 *
 * The actor's effects are the backend's (`PgPublication` on a real server; a fake in the TestClock tests), so the
 * batching and answering logic is tested without a server.
 */
import { Cause, Deferred, Duration, Effect, Exit, Queue, Result, type Scope, SubscriptionRef } from "effect"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import type { OwnershipLost } from "../ownership/Ownership.ts"
import type { PublicationError } from "./PublicationCatalog.ts"
import * as Configuration from "./Configuration.ts"
import * as Desired from "./Desired.ts"
import * as Subscription from "./Subscription.ts"
import type { Validated } from "./Validation.ts"
import { WritesWouldBreak } from "./WriteSafety.ts"

export interface Drift {
  readonly code: "PublicationMissing" | "PublicationDropped" | "TablesDiffer" | "PublishOptions" | "Owner" | "TableRenamed" | "TableDropped" | "WritesWouldBreak"
  readonly message: string
}

/** Where the subscriptions' tables are now, found by OID. */
export interface Followed {
  /** Subscriptions whose table now has another name (or schema): as they are now. */
  readonly renamed: ReadonlyArray<{ readonly before: Validated; readonly after: Validated }>
  /** Subscriptions whose table no longer exists. */
  readonly dropped: ReadonlyArray<Validated>
  /** Subscriptions that had no OID recorded, with the one their table has now (to be saved). */
  readonly identified: ReadonlyArray<Validated>
}

export interface Change {
  /** Every live subscription after the change. */
  readonly all: ReadonlyArray<Validated>
  readonly added: ReadonlyArray<Validated>
  readonly removed: ReadonlyArray<string>
  /** Recorded with the change: the configuration it makes the set (see `Configuration`); the backend adds the epoch. */
  readonly configured?: Omit<Configuration.Configured, "epoch"> | undefined
}

export type ApplyError = PublicationError | OwnershipLost | LockBackendError | WritesWouldBreak

export interface PublicationBackend {
  /** The server's checks of one subscription; changes nothing. */
  readonly validate: (s: Subscription.Checked) => Effect.Effect<Validated, Subscription.SubscriptionInvalid | PublicationError>
  /** The stream's subscriptions as they were saved. */
  readonly load: Effect.Effect<ReadonlyArray<Validated>, PublicationError>
  /** One guarded transaction: the publication becomes what `change.all` needs, and the change is saved. */
  readonly apply: (change: Change) => Effect.Effect<void, ApplyError>
  /** How the publication differs from what `all` needs (empty: it does not). */
  readonly inspect: (all: ReadonlyArray<Validated>) => Effect.Effect<ReadonlyArray<Drift>, PublicationError>
  /** Where the tables of `all` are now (by OID). */
  readonly follow: (all: ReadonlyArray<Validated>) => Effect.Effect<Followed, PublicationError>
  /** The configuration the set was last made to follow, if any was recorded. */
  readonly configured: Effect.Effect<Configuration.Configured | undefined, PublicationError>
}

export type RequestError = Subscription.SubscriptionInvalid | ApplyError

export interface PublicationStatus {
  readonly subscriptions: number
  readonly tables: number
  readonly reconciledAt: number | undefined
  readonly drift: ReadonlyArray<Drift>
  readonly lastError: string | undefined
  /** Set (and kept) once the publication was found dropped behind slotkeeper's back: consumers must resync. */
  readonly resyncRequired: string | undefined
  /** This instance's configuration differs from the set in place, which an instance started later set (kept). */
  readonly disagreement: string | undefined
}

/** The status before anything is known. */
export const initialStatus: PublicationStatus = {
  subscriptions: 0,
  tables: 0,
  reconciledAt: undefined,
  drift: [],
  lastError: undefined,
  resyncRequired: undefined,
  disagreement: undefined
}

export interface PublicationManager {
  /** Adds a subscription; succeeds once the publication includes it. */
  readonly add: (s: Subscription.Subscription) => Effect.Effect<void, RequestError>
  /** Removes a subscription; succeeds once the publication no longer needs to include it for this one. */
  readonly remove: (id: string) => Effect.Effect<void, RequestError>
  /**
   * Makes `subscriptions` the whole set: every other subscription is removed, one whose spec changed is replaced (its
   * table dropped and re-added in the same transaction), new ones are added. All or nothing: if any of them is invalid
   * the request fails with its error and nothing changes. For a set that comes from configuration.
   */
  readonly sync: (subscriptions: ReadonlyArray<Subscription.Subscription>) => Effect.Effect<void, RequestError>
  readonly subscriptions: Effect.Effect<ReadonlyArray<Validated>>
  /**
   * What the publication delivers for the table of subscription `id`, with every live subscription of that table
   * merged as `Desired` merges them (PostgreSQL's rule for a table in several publications): the columns of all of
   * them (all, if one names none), the rows any of them wants (all, if one has no filter). A subscriber of a shared
   * table gets that, a superset of its own; `undefined` for an id that is not live.
   */
  readonly delivered: (id: string) => Effect.Effect<Desired.TableSpec | undefined>
  readonly status: SubscriptionRef.SubscriptionRef<PublicationStatus>
}

export interface PublicationManagerOptions {
  /** How long the actor waits after a request for more to batch with it (default 100 ms). */
  readonly debounce?: Duration.Input
  /** How often the publication is compared with the desired one (default 30 s). */
  readonly driftInterval?: Duration.Input
  /** Where the status goes (a fresh one by default); it is reset as the manager starts. */
  readonly status?: SubscriptionRef.SubscriptionRef<PublicationStatus>
  /** What to do about drift: repair it (default) or only report it. */
  readonly onDrift?: "repair" | "report"
  /**
   * The stream's whole set, from this instance's configuration: made so at start (see the module comment) instead of
   * the saved set being reconciled first.
   */
  readonly configured?: {
    readonly subscriptions: ReadonlyArray<Subscription.Subscription>
    readonly instanceId: string
    /** When this instance started, microseconds since the Unix epoch by the database's clock (`StreamOwnership`). */
    readonly startedAt: string
  }
}

type Request =
  | { readonly _tag: "Add"; readonly subscription: Subscription.Subscription; readonly done: Deferred.Deferred<void, RequestError> }
  | { readonly _tag: "Remove"; readonly id: string; readonly done: Deferred.Deferred<void, RequestError> }
  | {
    readonly _tag: "Sync"
    readonly subscriptions: ReadonlyArray<Subscription.Subscription>
    readonly done: Deferred.Deferred<void, RequestError>
    readonly configured?: Change["configured"]
  }
  | { readonly _tag: "Reconcile" }

/** Starts the actor in the current scope: recovers, reconciles, then serves requests and watches for drift. */
export const make = (
  backend: PublicationBackend,
  options: PublicationManagerOptions = {}
): Effect.Effect<PublicationManager, RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const debounce = options.debounce ?? "100 millis"
    const recovered = yield* backend.load
    let current = new Map(recovered.map((s) => [s.id, s]))
    // removed from the saved set with the next change
    let stale: Array<string> = []
    // renamed, or newly identified by OID: saved with the next change
    let unsaved = new Map<string, Validated>()
    /** Follows the tables by OID: renames kept, drops removed; what happened, as drift to report. */
    const followTables = Effect.gen(function*() {
      const followed = yield* backend.follow([...current.values()])
      const drift: Array<Drift> = []
      for (const { after, before } of followed.renamed) {
        current.set(after.id, after)
        unsaved.set(after.id, after)
        drift.push({
          code: "TableRenamed",
          message: `table ${before.schema}.${before.name} (subscription ${JSON.stringify(before.id)}) is now ${after.schema}.${after.name}: it stays ` +
            `published under its new name; a table created under the old name is not published unless configured`
        })
      }
      for (const s of followed.identified) {
        current.set(s.id, s)
        unsaved.set(s.id, s)
      }
      for (const s of followed.dropped) {
        current.delete(s.id)
        unsaved.delete(s.id)
        stale.push(s.id)
        drift.push({
          code: "TableDropped",
          message: `table ${s.schema}.${s.name} (subscription ${JSON.stringify(s.id)}) was dropped: its changes stopped with it; the subscription ` +
            `is removed, and a table created under the same name is not published unless configured and checked`
        })
      }
      return drift
    })
    /** What following the tables found (renames, drops): reported until the process ends, beside what `inspect` finds. */
    let followed: ReadonlyArray<Drift> = yield* followTables
    /** The last change refused because it would break the application's writes; cleared by a change that succeeds. */
    let refused: Drift | undefined
    const withRefused = (drift: ReadonlyArray<Drift>): ReadonlyArray<Drift> =>
      refused === undefined || drift.some((d) => d.code === "WritesWouldBreak") ? drift : [...drift, refused]
    const tableCount = (subs: Iterable<Validated>) => new Set([...subs].map((s) => `${s.schema}\u0000${s.name}`)).size
    const initial: PublicationStatus = { ...initialStatus, subscriptions: current.size, tables: tableCount(current.values()) }
    const status = options.status ?? (yield* SubscriptionRef.make<PublicationStatus>(initial))
    yield* SubscriptionRef.set(status, initial)

    const report = (drift: ReadonlyArray<Drift>) =>
      Effect.gen(function*() {
        const before = (yield* SubscriptionRef.get(status)).drift
        for (const d of drift) {
          if (before.some((b) => b.code === d.code && b.message === d.message)) continue
          yield* (["PublicationDropped", "TableDropped", "WritesWouldBreak"].includes(d.code)
            ? Effect.logError(d.message)
            : d.code === "PublicationMissing"
            ? Effect.logInfo(d.message)
            : Effect.logWarning(d.message))
        }
        const dropped = drift.find((d) => d.code === "PublicationDropped")
        yield* SubscriptionRef.update(status, (s) => ({ ...s, drift, resyncRequired: s.resyncRequired ?? dropped?.message }))
      })

    // A successful apply leaves the publication as desired (or fails): nothing has drifted right after it.
    const reconciled = Effect.flatMap(Effect.clockWith((c) => c.currentTimeMillis), (now) => {
      refused = undefined
      return SubscriptionRef.update(status, (s) => ({ ...s, subscriptions: current.size, tables: tableCount(current.values()), reconciledAt: now, lastError: undefined, drift: followed }))
    })

    const mailbox = yield* Queue.unbounded<Request>()

    const processBatch = (batch: ReadonlyArray<Request>) =>
      Effect.gen(function*() {
        const working = new Map(current)
        const added = new Map<string, Validated>()
        const removed = new Set<string>()
        const accepted: Array<Deferred.Deferred<void, RequestError>> = []
        let reconcile = false
        let configured: Change["configured"]
        for (const id of stale) removed.add(id)
        for (const [id, v] of unsaved) if (working.has(id)) added.set(id, v)
        for (const request of batch) {
          if (request._tag === "Reconcile") {
            reconcile = true
            continue
          }
          const drop = (id: string) => {
            if (working.delete(id)) {
              if (!added.delete(id)) removed.add(id)
            }
          }
          // saved with this spec: new, or replacing one removed or changed in this batch (the table is dropped and
          // re-added in the same transaction)
          const put = (v: Validated) => {
            working.set(v.id, v)
            added.set(v.id, v)
            removed.delete(v.id)
          }
          if (request._tag === "Remove") {
            drop(request.id)
            accepted.push(request.done)
            continue
          }
          if (request._tag === "Sync") {
            // validate the whole set first: one invalid subscription fails the request, and none of it is applied
            const checked: Array<Subscription.Checked> = []
            let refused: Exit.Exit<unknown, RequestError> | undefined
            for (const s of request.subscriptions) {
              const c = Subscription.check(s)
              if (Result.isFailure(c)) {
                refused = Exit.fail(c.failure)
                break
              }
              checked.push(c.success)
            }
            const kept = new Set(checked.map((c) => c.id))
            const validated: Array<Validated> = []
            for (const c of refused === undefined ? checked : []) {
              const existing = working.get(c.id)
              if (existing !== undefined && Subscription.sameSpec(existing, c)) continue
              const v = yield* Effect.exit(backend.validate(c))
              if (Exit.isFailure(v)) {
                refused = v
                break
              }
              validated.push(v.value)
            }
            if (refused !== undefined) {
              yield* Deferred.done(request.done, Exit.asVoid(refused))
              continue
            }
            for (const id of [...working.keys()]) if (!kept.has(id)) drop(id)
            for (const v of validated) put(v)
            configured = request.configured ?? configured
            accepted.push(request.done)
            continue
          }
          const result = Subscription.check(request.subscription)
          if (Result.isFailure(result)) {
            yield* Deferred.fail(request.done, result.failure)
            continue
          }
          const checked = result.success
          const existing = working.get(checked.id)
          if (existing !== undefined) {
            if (Subscription.sameSpec(existing, checked)) accepted.push(request.done)
            else {
              yield* Deferred.fail(request.done, new Subscription.SubscriptionInvalid({
                id: checked.id,
                reason: "Conflict",
                message: `subscription ${JSON.stringify(checked.id)} exists with another table, column list or filter: remove it first, or use another id`
              }))
            }
            continue
          }
          const validated = yield* Effect.exit(backend.validate(checked))
          if (Exit.isFailure(validated)) {
            yield* Deferred.failCause(request.done, validated.cause)
            continue
          }
          put(validated.value)
          accepted.push(request.done)
        }
        if (accepted.length === 0 && !reconcile) return
        const result = yield* Effect.exit(backend.apply({ all: [...working.values()], added: [...added.values()], removed: [...removed], configured }))
        if (Exit.isSuccess(result)) {
          current = working
          stale = []
          unsaved = new Map()
          yield* reconciled
        } else {
          const error = Cause.squash(result.cause)
          const message = error instanceof Error ? error.message : String(error)
          // a repair that would break the application's writes is not made, and said loudly (kept in the status until
          // a change succeeds)
          if (reconcile) yield* Effect.logError(`publication repair not made: ${message}`)
          if (error instanceof WritesWouldBreak) refused = { code: "WritesWouldBreak", message }
          yield* SubscriptionRef.update(status, (s) => ({ ...s, lastError: message, drift: withRefused(s.drift) }))
        }
        for (const done of accepted) yield* Deferred.done(done, result)
      })

    // Start: say what drifted while nobody owned the stream. Then either the configured set is made the whole set (the
    // saved one is never applied before it), or — with no configured set, or one of an instance started before the one
    // whose set is in place — the live saved set is reconciled as a whole.
    yield* report([...followed, ...(yield* backend.inspect([...current.values()]))])
    const reconcileStart = Effect.gen(function*() {
      const result = yield* Effect.exit(backend.apply({ all: [...current.values()], added: [...unsaved.values()], removed: stale }))
      if (Exit.isFailure(result)) return yield* Effect.failCause(result.cause)
      stale = []
      unsaved = new Map()
      yield* reconciled
    })
    const mine = options.configured
    if (mine === undefined) yield* reconcileStart
    else {
      const checked = yield* Effect.forEach(mine.subscriptions, (s) => Effect.fromResult(Subscription.check(s)))
      const hash = Configuration.hash(checked)
      const decision = Configuration.decide(yield* backend.configured, { hash, startedAt: mine.startedAt })
      if (decision._tag === "Keep") {
        const message = Configuration.disagreement(decision.recorded, mine)
        yield* Effect.logWarning(message)
        yield* SubscriptionRef.update(status, (s) => ({ ...s, disagreement: message }))
        yield* reconcileStart
      } else {
        const done = yield* Deferred.make<void, RequestError>()
        yield* processBatch([{
          _tag: "Sync",
          subscriptions: mine.subscriptions,
          done,
          configured: decision._tag === "Apply" ? { hash, instanceId: mine.instanceId, startedAt: mine.startedAt } : undefined
        }])
        yield* Deferred.await(done)
      }
    }

    // The actor: one batch at a time, each after the debounce window that its first request opened.
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const first = yield* Queue.take(mailbox)
      yield* Effect.sleep(debounce)
      const rest = yield* Queue.clear(mailbox)
      yield* processBatch([first, ...rest])
    })))

    // Drift: compared on a timer; repaired through the mailbox, like any change.
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      yield* Effect.sleep(options.driftInterval ?? "30 seconds")
      const now = yield* Effect.orElseSucceed(followTables, () => [] as ReadonlyArray<Drift>)
      followed = [...followed.filter((d) => !now.some((n) => n.message === d.message)), ...now]
      const drift = yield* Effect.orElseSucceed(backend.inspect([...current.values()]), () => [] as ReadonlyArray<Drift>)
      yield* report(withRefused([...followed, ...drift]))
      if ((drift.length > 0 || now.length > 0) && (options.onDrift ?? "repair") === "repair") yield* Queue.offer(mailbox, { _tag: "Reconcile" })
    })))

    const request = (make: (done: Deferred.Deferred<void, RequestError>) => Request) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<void, RequestError>()
        yield* Queue.offer(mailbox, make(done))
        return yield* Deferred.await(done)
      })

    return {
      add: (subscription) => request((done) => ({ _tag: "Add", subscription, done })),
      remove: (id) => request((done) => ({ _tag: "Remove", id, done })),
      sync: (subscriptions) => request((done) => ({ _tag: "Sync", subscriptions, done })),
      subscriptions: Effect.sync(() => [...current.values()]),
      delivered: (id) =>
        Effect.sync(() => {
          const own = current.get(id)
          if (own === undefined) return undefined
          return Desired.desired([...current.values()].filter((s) => s.schema === own.schema && s.name === own.name))[0]
        }),
      status
    } satisfies PublicationManager
  })
