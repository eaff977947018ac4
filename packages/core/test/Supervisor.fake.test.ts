/**
 * The supervisor's timing logic, deterministic: TestClock and the in-memory FakeLockBackend (no PostgreSQL; the
 * real backends have their own tests against real servers).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Layer, Ref, Result, SubscriptionRef } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import { TestClock } from "effect/testing"
import { Ownership, OwnershipLost } from "../src/ownership/Ownership.ts"
import * as OwnershipConfig from "../src/ownership/OwnershipConfig.ts"
import * as Supervisor from "../src/ownership/Supervisor.ts"
import { fakeBackend, fakeGuard, makeControls, makeFakeServer } from "./FakeLockBackend.ts"

const config = (options: Partial<OwnershipConfig.OwnershipOptions> = {}) => {
  const c = OwnershipConfig.make({
    streamId: "orders",
    instanceId: "a",
    heartbeatInterval: "1 second",
    lossDeadline: "3500 millis",
    serverReleaseBound: "6 seconds",
    safetyMargin: "2 seconds",
    acquireInterval: "500 millis",
    ...options
  })
  return Result.getOrThrow(c)
}

/** Owned work that records when it started and when it was interrupted (virtual ms). */
const recorder = Effect.gen(function*() {
  const events = yield* Ref.make<Array<string>>([])
  const owned = Effect.gen(function*() {
    const own = yield* Ownership
    const now = yield* Clock.currentTimeMillis
    yield* Ref.update(events, (e) => [...e, `start ${now} epoch ${own.epoch}`])
    yield* Effect.never
  }).pipe(Effect.onInterrupt(() =>
    Effect.flatMap(Clock.currentTimeMillis, (t) => Ref.update(events, (e) => [...e, `interrupted ${t}`]))
  ))
  return { events, owned }
})

/** One instance against a fake server that releases after 6 s: the common setup of these tests. */
const single = (options: Partial<OwnershipConfig.OwnershipOptions> = {}) =>
  Effect.gen(function*() {
    const server = makeFakeServer(6_000)
    const controls = makeControls()
    const sup = yield* Supervisor.make(config(options), fakeBackend(server, "a", controls), fakeGuard(server, "a"))
    const { events, owned } = yield* recorder
    return { server, controls, sup, events, owned }
  })

describe("Supervisor timing (TestClock, fake backend)", () => {
  it.effect("three missed heartbeats: ownership is lost exactly at the detection deadline, and the owned work interrupted then", () =>
    Effect.gen(function*() {
      const { controls, events, owned, sup } = yield* single({ onLoss: "exit" })
      controls.check = "fail"
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("3499 millis")
      assert.isUndefined(run.pollUnsafe())
      assert.deepStrictEqual(controls.checks, [1_000, 2_000, 3_000])
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(run)
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 3500"])
      const error = Exit.isFailure(exit) ? (exit.cause as unknown as { reasons: Array<{ error: { _tag: string; message: string } }> }).reasons[0]?.error : undefined
      assert.strictEqual(error?._tag, "OwnershipLost")
      assert.match(error!.message, /no successful check for 3500 ms.*fake: connection timeout/)
    }))

  it.effect("a check that hangs is cut off at the deadline: lost exactly then", () =>
    Effect.gen(function*() {
      const { controls, events, owned, sup } = yield* single({ onLoss: "exit" })
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      controls.check = "hang" // the path dies right after the acquisition
      yield* TestClock.adjust("3499 millis")
      assert.isUndefined(run.pollUnsafe())
      assert.deepStrictEqual(controls.checks, [1_000]) // one check started, never answered
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 3500"])
      // the release over the dead path is abandoned after one check interval; then the supervisor stops
      yield* TestClock.adjust("999 millis")
      assert.isUndefined(run.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.isTrue(Exit.isFailure(yield* Fiber.await(run)))
    }))

  it.effect("a good check moves the deadline to its start + lossDeadline", () =>
    Effect.gen(function*() {
      const { controls, events, owned, sup } = yield* single({ onLoss: "exit" })
      controls.check = "fail"
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("2500 millis") // misses at 1 s and 2 s
      controls.check = "ok"
      yield* TestClock.adjust("1 second") // confirmed at 3 s: deadline 6.5 s
      controls.check = "fail"
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(run.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      yield* Fiber.await(run)
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 6500"])
    }))

  it.effect("a check that proves the loss ends ownership at once", () =>
    Effect.gen(function*() {
      const { controls, events, owned, sup } = yield* single({ onLoss: "exit" })
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      controls.check = "not-held"
      yield* TestClock.adjust("1 second")
      yield* Fiber.await(run)
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 2000"])
    }))

  it.effect("the owned work proving the loss (OwnershipLost from a sink or another server) ends the holding as a loss: released, then competes again with a new epoch", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const controls = makeControls()
      const sup = yield* Supervisor.make(config({ rejoinDelay: "1 second" }), fakeBackend(server, "a", controls), fakeGuard(server, "a"))
      const periods: Array<number> = []
      const owned = Effect.gen(function*() {
        const own = yield* Ownership
        periods.push(own.epoch)
        if (periods.length === 1) {
          yield* Effect.sleep("2 seconds")
          return yield* new OwnershipLost({ streamId: "orders", epoch: own.epoch, message: "fake: the sink answered 409, a newer owner wrote" })
        }
        return yield* Effect.never
      })
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("2 seconds")
      const stopping = yield* SubscriptionRef.get(sup.status)
      assert.deepInclude(stopping, { _tag: "Stopping", reason: "fake: the sink answered 409, a newer owner wrote" })
      assert.isUndefined(server.holder) // released: the next owner need not wait for a release bound
      yield* TestClock.adjust("1 second") // the rejoin delay, then competes again
      assert.isUndefined(run.pollUnsafe()) // not a failure of run
      assert.deepStrictEqual(periods, [1, 2])
      assert.deepInclude(yield* SubscriptionRef.get(sup.status), { _tag: "Active", epoch: 2 })
    }))

  it.effect("a connection fault that escapes the owned work (a raw SqlError: the server closed the connection) ends the holding as a loss and competes again, never a failure", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const sup = yield* Supervisor.make(config({ rejoinDelay: "1 second" }), fakeBackend(server, "a", makeControls()), fakeGuard(server, "a"))
      const periods: Array<number> = []
      const owned = Effect.gen(function*() {
        periods.push((yield* Ownership).epoch)
        if (periods.length > 1) return yield* Effect.never
        yield* Effect.sleep("2 seconds")
        return yield* Effect.die(new SqlError({ reason: new ConnectionError({ cause: new Error("Connection closed"), message: "PgConnection: Connection closed" }) }))
      })
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("2 seconds")
      assert.deepInclude(yield* SubscriptionRef.get(sup.status), { _tag: "Stopping" })
      yield* TestClock.adjust("1 second")
      assert.isUndefined(run.pollUnsafe())
      assert.deepStrictEqual(periods, [1, 2])
    }))

  it.effect("assertFresh: succeeds while ownership was confirmed within the deadline, fails from the deadline on (no write after a pause)", () =>
    Effect.gen(function*() {
      const { controls, sup } = yield* single()
      const fresh: Array<string> = []
      const owned = Effect.gen(function*() {
        const own = yield* Ownership
        for (;;) {
          const exit = yield* Effect.exit(own.assertFresh)
          fresh.push(`${yield* Clock.currentTimeMillis} ${Exit.isSuccess(exit) ? "ok" : "refused"}`)
          yield* Effect.sleep("500 millis")
        }
      }).pipe(Effect.onInterrupt(() => Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => void fresh.push(`${t} interrupted`)))))
      yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1100 millis") // confirmed at 1 s: fresh until 4.5 s
      controls.check = "hang"
      yield* TestClock.adjust("3400 millis")
      assert.deepStrictEqual(fresh, ["0 ok", "500 ok", "1000 ok", "1500 ok", "2000 ok", "2500 ok", "3000 ok", "3500 ok", "4000 ok", "4500 interrupted"])
    }))

  it.effect("two instances: the second becomes owner only after the server released the first, which gave up a margin earlier", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const ca = makeControls()
      const cb = makeControls()
      const a = yield* Supervisor.make(config({ instanceId: "a" }), fakeBackend(server, "a", ca), fakeGuard(server, "a"))
      const b = yield* Supervisor.make(config({ instanceId: "b" }), fakeBackend(server, "b", cb), fakeGuard(server, "b"))
      const ra = yield* recorder
      const rb = yield* recorder
      yield* Effect.forkChild(a.run(ra.owned), { startImmediately: true })
      yield* TestClock.adjust("10 millis")
      yield* Effect.forkChild(b.run(rb.owned), { startImmediately: true })
      // a is healthy for a while; b waits and its status names the holder
      yield* TestClock.adjust("2 seconds")
      const waiting = yield* SubscriptionRef.get(b.status)
      assert.strictEqual(waiting._tag, "Waiting")
      assert.strictEqual(waiting._tag === "Waiting" ? waiting.holder?.holder : undefined, "a")
      // a's path hangs after its good check at 2 s: a gives up at 2 + 3.5 = 5.5 s; the server releases at 2 + 6 = 8 s
      ca.check = "hang"
      yield* TestClock.adjust("7 seconds")
      const aEvents = yield* Ref.get(ra.events)
      const bEvents = yield* Ref.get(rb.events)
      assert.deepStrictEqual(aEvents.slice(0, 2), ["start 0 epoch 1", "interrupted 5500"])
      const bStart = Number(/^start ([\d.]+) epoch 2$/.exec(bEvents[0] ?? "")?.[1])
      // b acquires at the first poll after the release: within one jittered poll interval (500 ms + 20%)
      assert.isAtLeast(bStart, 8_000)
      assert.isAtMost(bStart, 8_000 + 600)
      assert.isAtLeast(bStart - 5_500, 2_000) // the safety margin between a's loss and b's start
    }))

  it.effect("lease timing: renewals every renewInterval; takeover only once the lease has expired", () =>
    Effect.gen(function*() {
      const lease = { mode: "lease", leaseDuration: "10 seconds", renewInterval: "4 seconds", safetyMargin: "2 seconds" } as const
      const server = makeFakeServer(10_000)
      const ca = makeControls()
      const cb = makeControls()
      const a = yield* Supervisor.make(config({ ...lease, instanceId: "a" }), fakeBackend(server, "a", ca), fakeGuard(server, "a"))
      const b = yield* Supervisor.make(config({ ...lease, instanceId: "b" }), fakeBackend(server, "b", cb), fakeGuard(server, "b"))
      const ra = yield* recorder
      const rb = yield* recorder
      yield* Effect.forkChild(a.run(ra.owned), { startImmediately: true })
      yield* Effect.forkChild(b.run(rb.owned), { startImmediately: true })
      yield* TestClock.adjust("9 seconds")
      assert.deepStrictEqual(ca.checks, [4_000, 8_000])
      ca.check = "hang" // the renewal at 12 s never answers: lease runs out at 8 + 10 = 18 s; a gives up at 8 + 8 = 16 s
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual((yield* Ref.get(ra.events)).slice(0, 2), ["start 0 epoch 1", "interrupted 16000"])
      const bStart = Number(/^start ([\d.]+) epoch 2$/.exec((yield* Ref.get(rb.events))[0] ?? "")?.[1])
      assert.isAtLeast(bStart, 18_000)
      assert.isAtMost(bStart, 18_600)
    }))

  it.effect("an unreachable database is retried with a capped backoff, and the status says why it waits", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const controls = makeControls()
      controls.openFailures = 3
      const sup = yield* Supervisor.make(config(), fakeBackend(server, "a", controls), fakeGuard(server, "a"))
      const { events, owned } = yield* recorder
      yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1 millis")
      const s = yield* SubscriptionRef.get(sup.status)
      assert.deepInclude(s, { _tag: "Waiting", lastError: "fake: connection refused" })
      yield* TestClock.adjust("1398 millis") // retries at 200, 600 (+400), 1400 (+800) ms
      assert.deepStrictEqual(yield* Ref.get(events), [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Ref.get(events), ["start 1400 epoch 1"])
    }))

  it.effect("the lock breaker terminates a stale holder, never one within its grace period", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(60_000)
      server.holder = "zombie"
      server.epoch = 7
      server.acquiredAt = 0
      server.releaseAt = 1_000_000
      const controls = makeControls()
      controls.holderIdleMs = 120_000
      const sup = yield* Supervisor.make(
        config({ serverReleaseBound: "60 seconds", breaker: { staleAfter: "90 seconds", gracePeriod: "30 seconds" } }),
        fakeBackend(server, "a", controls),
        fakeGuard(server, "a")
      )
      const { events, owned } = yield* recorder
      yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("29 seconds") // stale, but acquired less than 30 s ago: left alone
      assert.deepStrictEqual(controls.broken, [])
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(controls.broken.length, 1)
      assert.isAtLeast(controls.broken[0]!, 30_000)
      yield* TestClock.adjust("1 second")
      assert.match((yield* Ref.get(events))[0] ?? "", /^start [\d.]+ epoch 8$/)
    }))

  it.effect("interrupting the supervisor (shutdown) interrupts the owned work and releases ownership for the next owner", () =>
    Effect.gen(function*() {
      const { events, owned, server, sup } = yield* single()
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.interrupt(run)
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 2000"])
      assert.isUndefined(server.holder)
      assert.include(server.log, "2000 a released")
    }))
})

describe("Supervisor rejoin (TestClock, fake backend)", () => {
  it.effect("after a loss, an instance stays out for rejoinDelay before competing again", () =>
    Effect.gen(function*() {
      const { controls, events, owned, server, sup } = yield* single({ rejoinDelay: "1 second" })
      yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      controls.check = "not-held" // lost at 2 s (proven: the fake server still names a, so a could take it back at once)
      server.holder = undefined
      yield* TestClock.adjust("1 second")
      controls.check = "ok"
      yield* TestClock.adjust("999 millis")
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 2000"])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Ref.get(events), ["start 0 epoch 1", "interrupted 2000", "start 3000 epoch 2"])
    }))
})

describe("Supervisor.runLayer (TestClock, fake backend)", () => {
  it.effect("an owned layer is built on acquisition and torn down on loss: its fibers interrupted, its finalizers run", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const controls = makeControls()
      const sup = yield* Supervisor.make(config({ onLoss: "exit" }), fakeBackend(server, "a", controls), fakeGuard(server, "a"))
      const log: Array<string> = []
      const stamp = (what: string) => Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => void log.push(`${what} ${t}`)))
      const Component = Layer.effectDiscard(Effect.gen(function*() {
        const own = yield* Ownership
        yield* stamp(`built epoch ${own.epoch}`)
        yield* Effect.addFinalizer(() => stamp("finalized"))
        yield* Effect.forkScoped(Effect.never.pipe(Effect.onInterrupt(() => stamp("worker interrupted"))))
      }))
      const run = yield* Effect.forkChild(sup.runLayer(Component), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      controls.check = "not-held"
      yield* TestClock.adjust("1 second")
      yield* Fiber.await(run)
      assert.deepStrictEqual(log, ["built epoch 1 0", "worker interrupted 2000", "finalized 2000"])
    }))
})

describe("Supervisor waiting on a dead path (TestClock, fake backend)", () => {
  it.effect("an acquisition attempt that never answers is abandoned at the deadline and retried on a new session", () =>
    Effect.gen(function*() {
      const server = makeFakeServer(6_000)
      const controls = makeControls()
      controls.check = "hang" // the path is dead: the attempt never answers
      const sup = yield* Supervisor.make(config(), fakeBackend(server, "a", controls), fakeGuard(server, "a"))
      const { events, owned } = yield* recorder
      yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("3500 millis") // the detection deadline
      const status = yield* SubscriptionRef.get(sup.status)
      assert.deepInclude(status, { _tag: "Waiting", lastError: "acquire: no answer within 3500 ms; reconnecting" })
      controls.check = "ok" // the path heals
      yield* TestClock.adjust("200 millis") // first retry of the capped backoff
      assert.deepStrictEqual(yield* Ref.get(events), ["start 3700 epoch 1"])
    }))
})

describe("Supervisor endings (TestClock, fake backend)", () => {
  it.effect("owned work that completes: ownership is released and run returns (no acquire/release loop)", () =>
    Effect.gen(function*() {
      const { server, sup } = yield* single()
      let runs = 0
      const exit = yield* Effect.exit(sup.run(Effect.sync(() => { runs++ })))
      assert.isTrue(Exit.isSuccess(exit))
      assert.strictEqual(runs, 1)
      assert.isUndefined(server.holder)
      assert.deepInclude(yield* SubscriptionRef.get(sup.status), { _tag: "Stopping", reason: "stopped" })
    }))

  it.effect("owned work that fails: ownership is released and run fails with that error; the status says Failed", () =>
    Effect.gen(function*() {
      const { server, sup } = yield* single()
      const error = yield* Effect.flip(sup.run(Effect.fail("component broke" as const)))
      assert.strictEqual(error, "component broke")
      assert.isUndefined(server.holder)
      const status = yield* SubscriptionRef.get(sup.status)
      assert.strictEqual(status._tag, "Failed")
      assert.match(status._tag === "Failed" ? status.error : "", /component broke/)
    }))

  it.effect("a shutdown (interruption) ends in Stopping, not Failed", () =>
    Effect.gen(function*() {
      const { owned, sup } = yield* single()
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(run)
      assert.deepInclude(yield* SubscriptionRef.get(sup.status), { _tag: "Stopping", reason: "stopped" })
    }))
})

describe("Supervisor shutdown order (TestClock, fake backend)", () => {
  it.effect("on shutdown the owned work's finalizers complete before ownership is released", () =>
    Effect.gen(function*() {
      const { server, sup } = yield* single()
      const owned = Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Effect.sync(() => void server.log.push("owned finalized")))
        return yield* Effect.never
      })
      const run = yield* Effect.forkChild(sup.run(owned), { startImmediately: true })
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(run)
      const tail = server.log.filter((l) => l === "owned finalized" || l.endsWith("a released"))
      assert.deepStrictEqual(tail, ["owned finalized", "1000 a released"])
    }))
})
