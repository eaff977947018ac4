/**
 * The publication manager's batching and answering, deterministic: TestClock and an in-memory fake backend that
 * records each guarded transaction it would run (no PostgreSQL; `PgPublication` has its own real-server tests).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { PublicationError } from "../src/publication/PublicationCatalog.ts"
import * as PublicationManager from "../src/publication/PublicationManager.ts"

const fakeBackend = (options: { readonly failApply?: boolean; readonly invalidTables?: ReadonlyArray<string> } = {}) => {
  const transactions: Array<PublicationManager.Change> = []
  const backend: PublicationManager.PublicationBackend = {
    validate: (s) =>
      options.invalidTables?.includes(s.name)
        ? Effect.fail(new PublicationError({ reason: "Query", message: `fake: ${s.name} refused` }))
        : Effect.succeed({ ...s, printedWhere: s.where }),
    load: Effect.succeed([]),
    apply: (change) =>
      options.failApply && transactions.length > 0
        ? Effect.fail(new PublicationError({ reason: "LockTimeout", message: "fake: locked" }))
        : Effect.sync(() => void transactions.push(change)),
    inspect: () => Effect.succeed([]),
    follow: () => Effect.succeed({ renamed: [], dropped: [], identified: [] }),
    configured: Effect.succeed(undefined)
  }
  return { backend, transactions }
}

describe("PublicationManager (TestClock, fake backend)", () => {
  it.effect("100 add/remove requests inside one debounce window: exactly one guarded transaction, every caller answered", () =>
    Effect.gen(function*() {
      const { backend, transactions } = fakeBackend()
      const manager = yield* PublicationManager.make(backend, { debounce: "100 millis" })
      assert.strictEqual(transactions.length, 1) // the start reconcile
      const callers: Array<Fiber.Fiber<void, PublicationManager.RequestError>> = []
      for (let i = 0; i < 100; i++) {
        // 70 adds over 10 tables, then 30 removes of the first 30
        const request = i < 70 ? manager.add({ id: `s${i}`, table: { name: `t${i % 10}` } }) : manager.remove(`s${i - 70}`)
        callers.push(yield* Effect.forkChild(request, { startImmediately: true }))
      }
      yield* TestClock.adjust("99 millis")
      assert.strictEqual(transactions.length, 1) // still inside the window
      yield* TestClock.adjust("1 millis")
      const exits = yield* Effect.forEach(callers, Fiber.await)
      assert.isTrue(exits.every(Exit.isSuccess))
      assert.strictEqual(transactions.length, 2)
      const batch = transactions[1]!
      assert.deepStrictEqual(batch.all.map((s) => s.id).sort(), Array.from({ length: 40 }, (_, i) => `s${i + 30}`).sort())
      assert.deepStrictEqual(batch.added.map((s) => s.id).sort(), batch.all.map((s) => s.id).sort()) // added and removed in one batch: never saved
      assert.deepStrictEqual(batch.removed, [])
      assert.deepStrictEqual((yield* manager.subscriptions).length, 40)
    }))

  it.effect("sync makes a list the whole set in one transaction: unlisted removed, changed replaced, new added; an invalid one changes nothing", () =>
    Effect.gen(function*() {
      const { backend, transactions } = fakeBackend({ invalidTables: ["refused"] })
      const manager = yield* PublicationManager.make(backend, { debounce: "100 millis" })
      const first = yield* Effect.forkChild(manager.sync([{ id: "a", table: { name: "a" } }, { id: "b", table: { name: "b" } }]), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(first)
      // b unchanged, a no longer listed, c new
      const second = yield* Effect.forkChild(manager.sync([{ id: "b", table: { name: "b" } }, { id: "c", table: { name: "c" }, columns: ["id"] }]), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(second)
      const changed = yield* Effect.forkChild(manager.sync([{ id: "b", table: { name: "b" }, where: "id > 0" }, { id: "c", table: { name: "c" }, columns: ["id"] }]), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(changed)
      const summary = (t: PublicationManager.Change) => ({ all: t.all.map((s) => s.id).sort(), added: t.added.map((s) => s.id).sort(), removed: [...t.removed].sort() })
      assert.deepStrictEqual(transactions.slice(1).map(summary), [
        { all: ["a", "b"], added: ["a", "b"], removed: [] },
        { all: ["b", "c"], added: ["c"], removed: ["a"] },
        { all: ["b", "c"], added: ["b"], removed: [] } // b replaced: saved again with the new filter
      ])
      assert.strictEqual(transactions[3]!.added[0]!.where, "id > 0")
      // one invalid subscription: the request fails with its error and nothing is applied, not even the valid part
      const refused = yield* Effect.forkChild(manager.sync([{ id: "x", table: { name: "x" } }, { id: "r", table: { name: "refused" } }]), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      assert.strictEqual((yield* Effect.flip(Fiber.join(refused)))._tag, "PublicationError")
      assert.strictEqual(transactions.length, 4)
      assert.deepStrictEqual((yield* manager.subscriptions).map((s) => s.id).sort(), ["b", "c"])
    }))

  it.effect("a request outside the window opens the next batch", () =>
    Effect.gen(function*() {
      const { backend, transactions } = fakeBackend()
      const manager = yield* PublicationManager.make(backend, { debounce: "100 millis" })
      const a = yield* Effect.forkChild(manager.add({ id: "a", table: { name: "t" } }), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(a)
      const b = yield* Effect.forkChild(manager.remove("a"), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(b)
      assert.deepStrictEqual(transactions.slice(1).map((t) => ({ all: t.all.length, added: t.added.map((s) => s.id), removed: t.removed })), [
        { all: 1, added: ["a"], removed: [] },
        { all: 0, added: [], removed: ["a"] }
      ])
    }))

  it.effect("an invalid subscription gets its own typed error and stays out of the batch; a failed transaction fails every caller in it", () =>
    Effect.gen(function*() {
      const { backend, transactions } = fakeBackend({ invalidTables: ["refused"] })
      const manager = yield* PublicationManager.make(backend, { debounce: "100 millis" })
      const good = yield* Effect.forkChild(manager.add({ id: "good", table: { name: "t" } }), { startImmediately: true })
      const lexical = yield* Effect.forkChild(manager.add({ id: "bad", table: { name: "t" }, where: "id > 0); DROP TABLE t; --" }), { startImmediately: true })
      const server = yield* Effect.forkChild(manager.add({ id: "refused", table: { name: "refused" } }), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      assert.isTrue(Exit.isSuccess(yield* Fiber.await(good)))
      const lexicalError = yield* Effect.flip(Fiber.join(lexical))
      assert.include(lexicalError, { _tag: "SubscriptionInvalid", reason: "Filter" })
      assert.strictEqual((yield* Effect.flip(Fiber.join(server)))._tag, "PublicationError")
      assert.deepStrictEqual(transactions.at(-1)!.added.map((s) => s.id), ["good"])

      const failing = fakeBackend({ failApply: true })
      const other = yield* PublicationManager.make(failing.backend, { debounce: "100 millis" })
      const x = yield* Effect.forkChild(other.add({ id: "x", table: { name: "t" } }), { startImmediately: true })
      const y = yield* Effect.forkChild(other.add({ id: "y", table: { name: "u" } }), { startImmediately: true })
      yield* TestClock.adjust("100 millis")
      for (const caller of [x, y]) assert.include(yield* Effect.flip(Fiber.join(caller)), { _tag: "PublicationError", reason: "LockTimeout" })
      assert.deepStrictEqual(yield* other.subscriptions, []) // nothing of the failed batch is kept
    }))

  it.effect("the same id with the same spec is a no-op; with another spec a conflict", () =>
    Effect.gen(function*() {
      const { backend } = fakeBackend()
      const manager = yield* PublicationManager.make(backend, { debounce: "10 millis" })
      const once = yield* Effect.forkChild(manager.add({ id: "a", table: { name: "t" }, columns: ["b", "a"] }), { startImmediately: true })
      yield* TestClock.adjust("10 millis")
      yield* Fiber.join(once)
      const again = yield* Effect.forkChild(manager.add({ id: "a", table: { name: "t" }, columns: ["a", "b"] }), { startImmediately: true })
      const other = yield* Effect.forkChild(manager.add({ id: "a", table: { name: "u" } }), { startImmediately: true })
      yield* TestClock.adjust("10 millis")
      yield* Fiber.join(again)
      assert.include(yield* Effect.flip(Fiber.join(other)), { _tag: "SubscriptionInvalid", reason: "Conflict" })
    }))
})
