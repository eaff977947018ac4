/**
 * Helpers for the real-PostgreSQL ownership tests: start an instance (StreamOwnership + a running supervisor) whose
 * owned work records when it started and when it was interrupted, in wall-clock milliseconds.
 */
import { FaultProxy, PgCluster, Wait } from "@slotkeeper/testkit"
import { Deferred, Effect, Fiber, Redacted, Stream, SubscriptionRef } from "effect"
import type { OwnershipStatus } from "../src/ownership/Ownership.ts"
import { Ownership } from "../src/ownership/Ownership.ts"
import type * as OwnershipConfig from "../src/ownership/OwnershipConfig.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"

/** Short timings, so a test sees losses and takeovers in seconds. */
export const fastTiming: Record<OwnershipConfig.LockMode, Partial<OwnershipConfig.OwnershipOptions>> = {
  advisory: {
    mode: "advisory",
    heartbeatInterval: "200 millis",
    lossDeadline: "1 second",
    serverReleaseBound: "2 seconds",
    safetyMargin: "500 millis",
    acquireInterval: "100 millis"
  },
  lease: {
    mode: "lease",
    leaseDuration: "2 seconds",
    renewInterval: "400 millis",
    safetyMargin: "500 millis",
    acquireInterval: "100 millis"
  }
}

export interface Interval {
  readonly instance: string
  readonly epoch: number
  readonly start: number
  end: number | undefined
}

export interface Instance {
  readonly name: string
  readonly ownership: StreamOwnership.StreamOwnership["Service"]
  readonly fiber: Fiber.Fiber<void, unknown>
  readonly statuses: Array<{ readonly at: number; readonly status: OwnershipStatus }>
  /** Resolves with the Ownership service of the first holding period. */
  readonly firstHold: Deferred.Deferred<Ownership["Service"]>
  readonly status: Effect.Effect<OwnershipStatus>
}

/** Starts an instance on `url`; its active intervals are appended to `intervals`. Interrupted when the scope closes. */
export const startInstance = (
  name: string,
  url: string,
  intervals: Array<Interval>,
  options: Partial<OwnershipConfig.OwnershipOptions> & Pick<StreamOwnership.StreamOwnershipOptions, "pools">
) =>
  Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: Redacted.make(url), ...options })
    const statuses: Array<{ at: number; status: OwnershipStatus }> = []
    yield* Effect.forkScoped(
      Stream.runForEach(SubscriptionRef.changes(ownership.supervisor.status), (status) =>
        Effect.sync(() => void statuses.push({ at: Date.now(), status })))
    )
    const firstHold = yield* Deferred.make<Ownership["Service"]>()
    const owned = Effect.gen(function*() {
      const own = yield* Ownership
      const interval: Interval = { instance: name, epoch: own.epoch, start: Date.now(), end: undefined }
      intervals.push(interval)
      yield* Deferred.succeed(firstHold, own)
      yield* Effect.addFinalizer(() => Effect.sync(() => { interval.end = Date.now() }))
      return yield* Effect.never
    })
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    return { name, ownership, fiber, statuses, firstHold, status: SubscriptionRef.get(ownership.supervisor.status) } satisfies Instance
  })

/** The active intervals must never overlap (an open interval ends at `now`). */
export const overlaps = (intervals: ReadonlyArray<Interval>): Array<string> => {
  const sorted = [...intervals].sort((a, b) => a.start - b.start)
  const problems: Array<string> = []
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!
    const cur = sorted[i]!
    const prevEnd = prev.end ?? Number.POSITIVE_INFINITY
    if (cur.start < prevEnd) problems.push(`${cur.instance} (epoch ${cur.epoch}) started at ${cur.start} before ${prev.instance} (epoch ${prev.epoch}) ended at ${prevEnd}`)
  }
  return problems
}

/** Waits (real time, polling) until `probe` gives a value, or dies after `timeoutMs`. */
export const eventually = Wait.eventually

export const activeOf = (intervals: ReadonlyArray<Interval>, instance: string) =>
  Effect.sync(() => intervals.find((i) => i.instance === instance && i.end === undefined))

/** A server, a fault proxy in front of it, and instance "a" holding the stream through the proxy. */
export const holderBehindProxy = (options: Partial<OwnershipConfig.OwnershipOptions>) =>
  Effect.gen(function*() {
    const pg = yield* PgCluster.make()
    const proxy = yield* FaultProxy.make({ targetPort: pg.port })
    const intervals: Array<Interval> = []
    const a = yield* startInstance("a", pg.urlWith({ port: proxy.port }), intervals, options)
    const held = yield* Deferred.await(a.firstHold)
    return { pg, proxy, intervals, a, held }
  })
