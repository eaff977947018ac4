/**
 * Fleet with a fake membership (a list of runner names the test changes, or makes unreadable) and fake streams that
 * only record their lives, under TestClock: the list and the placement decide what runs where, a failing stream is
 * run again after a backoff, a runner that cannot read membership stops its streams after the expiration, and closing
 * the fleet stops every stream.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as Fleet from "../src/fleet/Fleet.ts"
import * as FleetPlacement from "../src/fleet/FleetPlacement.ts"
import { Membership, MembershipUnavailable } from "../src/fleet/Membership.ts"

/** A fake membership shared by the test's runners: `runners` is what every runner reads, unless `unreadable`. */
interface FakeMembers {
  runners: ReadonlyArray<string>
  unreadable: ReadonlySet<string>
}
const fakeMembership = (members: FakeMembers, self: string) =>
  Layer.succeed(Membership)({
    self,
    runners: Effect.suspend(() => (members.unreadable.has(self) ? Effect.fail(new MembershipUnavailable({ message: "control database unreachable (fake)" })) : Effect.succeed(members.runners)))
  })
const alone = fakeMembership({ runners: ["r1"], unreadable: new Set() }, "r1")

/** A fake stream: records its starts and stops in `log`; fails its first `failures` runs. */
const fakeStream = (log: Array<string>, id: string, version = "1", failures = 0) => {
  let runs = 0
  return {
    id,
    version,
    run: (started: Effect.Effect<void>) => Effect.gen(function*() {
      runs++
      log.push(`start ${id}@${version}`)
      yield* started
      if (runs <= failures) return yield* Effect.fail(new Error(`${id} failed (${runs})`))
      return yield* Effect.never
    }).pipe(Effect.onInterrupt(() => Effect.sync(() => log.push(`stop ${id}@${version}`))))
  }
}

const settle = Effect.andThen(Effect.yieldNow, Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true }))

describe("Fleet (fake membership, fake streams, TestClock)", () => {
  it.effect("the list decides what runs: added, removed and changed streams; a failed stream runs again after a backoff", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const lists = yield* Queue.unbounded<ReadonlyArray<Fleet.FleetStream<Error, never>>>()
      const fiber = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        const fleet = yield* Layer.build(Fleet.layer(Stream.fromQueue(lists)).pipe(Layer.provide(alone)))
        yield* Queue.offer(lists, [fakeStream(log, "a"), fakeStream(log, "b", "1", 1)])
        // membership acted on once two reads agree (at 0 s and 1 s)
        yield* TestClock.adjust("1 second")
        yield* settle
        const service = Context.get(fleet, Fleet.Fleet)
        const first = yield* service.here
        assert.deepStrictEqual(first.map((h) => h.id), ["a", "b"])
        assert.strictEqual(first.find((h) => h.id === "b")!.restarts, 1)
        assert.match(first.find((h) => h.id === "b")!.lastError ?? "", /b failed \(1\)/)
        // b failed once: run again after the first backoff (1 s)
        assert.deepStrictEqual(log.filter((l) => l.includes("b@")), ["start b@1"])
        yield* TestClock.adjust("1 second")
        yield* settle
        assert.deepStrictEqual(log.filter((l) => l.includes("b@")), ["start b@1", "start b@1"])
        // a removed, b changed, c added
        yield* Queue.offer(lists, [fakeStream(log, "b", "2"), fakeStream(log, "c")])
        yield* TestClock.adjust("100 millis")
        yield* settle
        // stopped (all at once) before anything starts
        assert.deepStrictEqual(log.slice(-4, -2).sort(), ["stop a@1", "stop b@1"])
        assert.deepStrictEqual(log.slice(-2), ["start b@2", "start c@1"])
        assert.deepStrictEqual((yield* service.here).map((h) => h.id), ["b", "c"])
        assert.deepStrictEqual(yield* service.streams, ["b", "c"])
      })))
      yield* Fiber.join(fiber)
      // the fleet closed: every stream stopped
      assert.deepStrictEqual(log.slice(-2).sort(), ["stop b@2", "stop c@1"])
    }))

  it.effect("the start gate: with one start slot, a stream starts only once the one before has said it started, or after the start timeout", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const go = yield* Deferred.make<void>()
      // a never says it started until `go`; b and c say so at once
      const slow: Fleet.FleetStream<never, never> = {
        id: "a",
        version: "1",
        run: (started) => Effect.andThen(Effect.sync(() => log.push("start a")), Effect.andThen(Deferred.await(go), Effect.andThen(started, Effect.never)))
      }
      const quick = (id: string): Fleet.FleetStream<never, never> => ({ id, version: "1", run: (started) => Effect.andThen(Effect.sync(() => log.push(`start ${id}`)), Effect.andThen(started, Effect.never)) })
      yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(Fleet.layer(Stream.make([slow, quick("b"), quick("c")]), { startConcurrency: 1, startTimeout: "10 seconds" }).pipe(Layer.provide(alone)))
        yield* Effect.never
      })))
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.deepStrictEqual(log, ["start a"])
      yield* Deferred.succeed(go, undefined)
      yield* settle
      assert.deepStrictEqual(log, ["start a", "start b", "start c"])
    }))

  it.effect("the start gate: a stream that never says it started gives its slot back after the start timeout", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const silent = (id: string): Fleet.FleetStream<never, never> => ({ id, version: "1", run: () => Effect.andThen(Effect.sync(() => log.push(`start ${id}`)), Effect.never) })
      yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(Fleet.layer(Stream.make([silent("a"), silent("b")]), { startConcurrency: 1, startTimeout: "10 seconds" }).pipe(Layer.provide(alone)))
        yield* Effect.never
      })))
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.strictEqual(log.length, 1)
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.strictEqual(log.length, 2)
    }))

  it.effect("placement: two runners share six streams 3/3, each on exactly one; a third joins: 2/2/2, moved streams stop where they were; one leaves: its streams move", () =>
    Effect.gen(function*() {
      const members: FakeMembers = { runners: ["r1", "r2"], unreadable: new Set() }
      const ids = ["t1", "t2", "t3", "t4", "t5", "t6"]
      const logs = new Map<string, Array<string>>()
      const services = new Map<string, Fleet.FleetShape>()
      const runner = (name: string) =>
        Effect.forkChild(Effect.scoped(Effect.gen(function*() {
          const log: Array<string> = []
          logs.set(name, log)
          const built = yield* Layer.build(Fleet.layer(Stream.make(ids.map((id) => fakeStream(log, id))), { startConcurrency: 10 }).pipe(Layer.provide(fakeMembership(members, name))))
          services.set(name, Context.get(built, Fleet.Fleet))
          yield* Effect.never
        })))
      const runsOn = (name: string) => Effect.map(services.get(name)!.here, (h) => h.map((x) => x.id))
      const check = (names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const all = (yield* Effect.forEach(names, runsOn)).flat()
          // each stream on exactly one runner, where the placement says, balanced
          assert.deepStrictEqual([...all].sort(), ids)
          const expected = FleetPlacement.assign(ids, names)
          for (const name of names) assert.deepStrictEqual(yield* runsOn(name), FleetPlacement.on(expected, name))
          const counts = yield* Effect.forEach(names, (n) => Effect.map(runsOn(n), (x) => x.length))
          assert.isAtMost(Math.max(...counts) - Math.min(...counts), 1, counts.join("/"))
        })
      const f1 = yield* runner("r1")
      yield* runner("r2")
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      yield* check(["r1", "r2"])
      // r3 joins (it reads membership too)
      members.runners = ["r1", "r2", "r3"]
      yield* runner("r3")
      yield* settle
      // two reads agree, then r3 starts its share at once; r1 and r2 stop theirs after the rebalance delay (10 s)
      yield* TestClock.adjust("2 seconds")
      yield* settle
      const early = (yield* Effect.forEach(["r1", "r2", "r3"], runsOn)).flat()
      assert.isAbove(early.length, ids.length, "standbys during the rebalance delay")
      yield* TestClock.adjust("10 seconds")
      yield* settle
      yield* check(["r1", "r2", "r3"])
      const moved = FleetPlacement.on(FleetPlacement.assign(ids, ["r1", "r2", "r3"]), "r3")
      for (const id of moved) {
        const was = FleetPlacement.assign(ids, ["r1", "r2"]).get(id)!
        assert.include(logs.get(was)!, `stop ${id}@1`)
      }
      // r1 leaves (stopped: its streams stop), and the others no longer count it
      yield* Fiber.interrupt(f1)
      assert.deepStrictEqual(logs.get("r1")!.filter((l) => l.startsWith("stop")).length, logs.get("r1")!.filter((l) => l.startsWith("start")).length)
      members.runners = ["r2", "r3"]
      yield* TestClock.adjust("12 seconds")
      yield* settle
      yield* check(["r2", "r3"])
    }))

  it.effect("membership unreadable: the streams here go on for the expiration, then all stop; read again, they start again. A runner not in membership runs nothing", () =>
    Effect.gen(function*() {
      const members: FakeMembers = { runners: ["r1"], unreadable: new Set() }
      const log: Array<string> = []
      let service: Fleet.FleetShape | undefined
      yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        const built = yield* Layer.build(Fleet.layer(Stream.make([fakeStream(log, "a"), fakeStream(log, "b")]), { expiration: "3 seconds" }).pipe(Layer.provide(fakeMembership(members, "r1"))))
        service = Context.get(built, Fleet.Fleet)
        yield* Effect.never
      })))
      yield* TestClock.adjust("1 second")
      yield* settle
      const here = () => Effect.map(service!.here, (h) => h.map((x) => x.id))
      assert.deepStrictEqual(yield* here(), ["a", "b"])
      yield* TestClock.adjust("1 second")
      yield* settle
      members.unreadable = new Set(["r1"])
      // reads fail at 2 s and 3 s and 4 s after the last good read (1 s): still within 3 s until 4 s
      yield* TestClock.adjust("3 seconds")
      yield* settle
      assert.deepStrictEqual(yield* here(), ["a", "b"])
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.deepStrictEqual(yield* here(), [])
      assert.deepStrictEqual(log.filter((l) => l.startsWith("stop")).sort(), ["stop a@1", "stop b@1"])
      assert.deepStrictEqual((yield* service!.placement).runners, [])
      // readable again, but another runner took this one's place in membership: nothing runs here
      members.unreadable = new Set()
      members.runners = ["r2"]
      yield* TestClock.adjust("2 seconds")
      yield* settle
      assert.deepStrictEqual(yield* here(), [])
      assert.strictEqual((yield* service!.placement).placed.get("a"), "r2")
      members.runners = ["r1", "r2"]
      yield* TestClock.adjust("2 seconds")
      yield* settle
      assert.strictEqual((yield* here()).length, 1)
    }))

  it.effect("missing from a membership it reads (a late heartbeat): the streams here go on, however long, nothing new starts; counted again, it takes its share after the rebalance delay", () =>
    Effect.gen(function*() {
      const members: FakeMembers = { runners: ["r1"], unreadable: new Set() }
      const log: Array<string> = []
      const lists = yield* Queue.unbounded<ReadonlyArray<Fleet.FleetStream<Error, never>>>()
      let service: Fleet.FleetShape | undefined
      yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        const built = yield* Layer.build(Fleet.layer(Stream.fromQueue(lists), { rebalanceDelay: "10 seconds" }).pipe(Layer.provide(fakeMembership(members, "r1"))))
        service = Context.get(built, Fleet.Fleet)
        yield* Effect.never
      })))
      yield* Queue.offer(lists, [fakeStream(log, "a"), fakeStream(log, "b")])
      yield* TestClock.adjust("1 second")
      yield* settle
      const here = () => Effect.map(service!.here, (h) => h.map((x) => x.id))
      assert.deepStrictEqual(yield* here(), ["a", "b"])
      // r1's heartbeat is late: everyone, r1 included, sees only r2 (two reads agree)
      members.runners = ["r2"]
      yield* TestClock.adjust("2 seconds")
      yield* settle
      // a stream added meanwhile does not start here; a and b go on, a minute later still
      yield* Queue.offer(lists, [fakeStream(log, "a"), fakeStream(log, "b"), fakeStream(log, "c")])
      yield* TestClock.adjust("60 seconds")
      yield* settle
      assert.deepStrictEqual(yield* here(), ["a", "b"])
      assert.isFalse(log.some((l) => l.startsWith("stop")))
      // counted again: what is placed here starts at once; what is placed on r2 stops after the rebalance delay
      members.runners = ["r1", "r2"]
      yield* TestClock.adjust("2 seconds")
      yield* settle
      const share = FleetPlacement.on(FleetPlacement.assign(["a", "b", "c"], ["r1", "r2"]), "r1")
      assert.deepStrictEqual(yield* here(), [...new Set(["a", "b", ...share])].sort())
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.deepStrictEqual(yield* here(), share)
    }))
})
