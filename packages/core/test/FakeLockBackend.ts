/**
 * FAKE: an in-memory stand-in for PostgreSQL's side of a stream lock, for the deterministic TestClock tests of the
 * supervisor's timing logic only. It models one rule of the real server: an owner whose session shows no activity for
 * `releaseBoundMs` (idle_session_timeout, or the lease running out) is released. Nothing here claims PostgreSQL
 * behaviour; the real backends are tested against real servers.
 */
import { Clock, Effect } from "effect"
import type { Held, HolderInfo, LockBackend, LockSession } from "../src/ownership/LockBackend.ts"
import { LockBackendError } from "../src/ownership/LockBackend.ts"
import type { CheckOutcome } from "../src/ownership/Liveness.ts"
import { type Guards, type Ownership, OwnershipLost } from "../src/ownership/Ownership.ts"

export interface FakeServer {
  holder: string | undefined
  epoch: number
  acquiredAt: number
  /** When the server releases the current holder unless it shows activity first. */
  releaseAt: number
  readonly releaseBoundMs: number
  readonly log: Array<string>
}

export const makeFakeServer = (releaseBoundMs: number): FakeServer => ({ holder: undefined, epoch: 0, acquiredAt: 0, releaseAt: 0, releaseBoundMs, log: [] })

/** How this instance's path to the server behaves: `hang` models a blackholed path (nothing answers). */
export type CheckMode = "ok" | "fail" | "hang" | "not-held"

export interface FakeControls {
  check: CheckMode
  /** Number of upcoming `open` calls that fail with a retryable error. */
  openFailures: number
  /** Idle time the holder shows to waiters (for the breaker). */
  holderIdleMs: number
  readonly checks: Array<number>
  readonly broken: Array<number>
}

export const makeControls = (): FakeControls => ({ check: "ok", openFailures: 0, holderIdleMs: 0, checks: [], broken: [] })

const expire = (server: FakeServer, now: number) => {
  if (server.holder !== undefined && now >= server.releaseAt) {
    server.log.push(`${now} server released ${server.holder}`)
    server.holder = undefined
  }
}

export const fakeBackend = (server: FakeServer, instance: string, controls: FakeControls): LockBackend => {
  const session: LockSession = {
    tryAcquire: Effect.gen(function*() {
      if (controls.check === "hang") return yield* Effect.never // a dead path answers nothing at all
      const now = yield* Clock.currentTimeMillis
      expire(server, now)
      if (server.holder === undefined) {
        server.holder = instance
        server.epoch++
        server.acquiredAt = now
        server.releaseAt = now + server.releaseBoundMs
        server.log.push(`${now} ${instance} acquired epoch ${server.epoch}`)
        return { _tag: "Acquired", held: { epoch: server.epoch } } as const
      }
      const holder: HolderInfo = { holder: server.holder, epoch: server.epoch, pid: 1, idleMs: controls.holderIdleMs, heldMs: now - server.acquiredAt }
      return { _tag: "Busy", holder } as const
    }),
    check: (held: Held) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        controls.checks.push(now)
        switch (controls.check) {
          case "hang":
            return yield* Effect.never
          case "fail":
            return { _tag: "Miss", detail: "fake: connection timeout" } satisfies CheckOutcome
          case "not-held":
            return { _tag: "NotHeld", detail: "fake: granted elsewhere" } satisfies CheckOutcome
          case "ok": {
            expire(server, now)
            if (server.holder !== instance || server.epoch !== held.epoch) return { _tag: "NotHeld", detail: `fake: held by ${server.holder}` } satisfies CheckOutcome
            server.releaseAt = now + server.releaseBoundMs
            return { _tag: "Confirmed" } satisfies CheckOutcome
          }
        }
      }),
    release: (held: Held) =>
      Effect.gen(function*() {
        if (controls.check === "hang") return yield* Effect.never
        const now = yield* Clock.currentTimeMillis
        if (server.holder === instance && server.epoch === held.epoch) {
          server.holder = undefined
          server.log.push(`${now} ${instance} released`)
        }
      }),
    breakHolder: () =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        controls.broken.push(now)
        server.log.push(`${now} ${instance} broke ${server.holder}`)
        server.holder = undefined
        return true
      })
  }
  return {
    mode: "advisory",
    open: Effect.suspend(() => {
      if (controls.openFailures > 0) {
        controls.openFailures--
        return Effect.fail(new LockBackendError({ operation: "open", message: "fake: connection refused", retryable: true }))
      }
      return Effect.succeed(session)
    })
  }
}

/** The guards as the fake server sees them: the epoch and holder must still be ours. */
export const fakeGuard = (server: FakeServer, instance: string): Guards => {
  const guard = (held: Held) => fakeGuardOf(server, instance)(held)
  return { guarded: guard, guardedSlotChange: guard }
}

const fakeGuardOf = (server: FakeServer, instance: string) => (held: Held): Ownership["Service"]["guarded"] =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.suspend((): Effect.Effect<A, E | OwnershipLost, R> =>
      server.holder === instance && server.epoch === held.epoch
        ? effect
        : Effect.fail(new OwnershipLost({ streamId: "fake", epoch: held.epoch, message: "fake: not the owner", found: `epoch ${server.epoch}` }))
    )
