/**
 * Fleet over the cluster's in-memory runner (`TestRunner`: one runner, every shard here), with fake streams that only
 * record their lives: registration follows the list, a failing stream is run again after a backoff (TestClock), and
 * closing the fleet stops every stream.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Queue, Stream } from "effect"
import { TestRunner } from "effect/cluster"
import { TestClock } from "effect/testing"
import * as Fleet from "../src/fleet/Fleet.ts"

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

describe("Fleet (TestRunner, fake streams)", () => {
  it.effect("the list decides what runs: added, removed and changed streams; a failed stream runs again after a backoff", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const lists = yield* Queue.unbounded<ReadonlyArray<Fleet.FleetStream<Error, never>>>()
      const fiber = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        const fleet = yield* Layer.build(Fleet.layer(Stream.fromQueue(lists)).pipe(Layer.provide(TestRunner.layer)))
        yield* Queue.offer(lists, [fakeStream(log, "a"), fakeStream(log, "b", "1", 1)])
        yield* TestClock.adjust("100 millis")
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
        assert.deepStrictEqual(log.slice(-4), ["stop a@1", "stop b@1", "start b@2", "start c@1"])
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
        yield* Layer.build(Fleet.layer(Stream.make([slow, quick("b"), quick("c")]), { startConcurrency: 1, startTimeout: "10 seconds" }).pipe(Layer.provide(TestRunner.layer)))
        yield* Effect.never
      })))
      yield* TestClock.adjust("100 millis")
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
        yield* Layer.build(Fleet.layer(Stream.make([silent("a"), silent("b")]), { startConcurrency: 1, startTimeout: "10 seconds" }).pipe(Layer.provide(TestRunner.layer)))
        yield* Effect.never
      })))
      yield* TestClock.adjust("100 millis")
      yield* settle
      assert.strictEqual(log.length, 1)
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.strictEqual(log.length, 2)
    }))
})
