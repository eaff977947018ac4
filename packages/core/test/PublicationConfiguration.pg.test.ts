/**
 * The publication at an owner's start, on a real server: the saved set is never re-applied before the configured one,
 * a saved table that is gone is dropped with a warning (not a crash loop), and two instances configured differently
 * (a rolling deploy) do not flip the publication when ownership goes back and forth between them.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Logger, Redacted, SubscriptionRef } from "effect"
import { Ownership } from "../src/ownership/Ownership.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as PgPublication from "../src/publication/PgPublication.ts"
import * as PublicationManager from "../src/publication/PublicationManager.ts"
import type * as Subscription from "../src/publication/Subscription.ts"
import { fastTiming } from "./ownership-helpers.ts"
import { publicationOptions, publicationTables, startManager } from "./publication-helpers.ts"

const table = (name: string): Subscription.Subscription => ({ id: name, table: { name } })

/** Runs a publication manager with `subscriptions` as this instance's configuration, each time it owns the stream. */
const holding = (stream: StreamOwnership.StreamOwnership["Service"], subscriptions: ReadonlyArray<Subscription.Subscription>) =>
  Effect.gen(function*() {
    const started = yield* Deferred.make<PublicationManager.PublicationManager, unknown>()
    const fiber = yield* Effect.forkChild(stream.supervisor.run(Effect.gen(function*() {
      const own = yield* Ownership
      const manager = yield* PublicationManager.make(yield* PgPublication.make(own, stream.sql, publicationOptions), {
        debounce: "20 millis",
        configured: { subscriptions, instanceId: own.instanceId, startedAt: stream.startedAt }
      })
      yield* Deferred.succeed(started, manager)
      return yield* Effect.never
    }).pipe(Effect.tapCause((cause) => Deferred.failCause(started, cause)))), { startImmediately: true })
    return { fiber, manager: Deferred.await(started) }
  })

describe("PublicationManager at an owner's start (real PostgreSQL 18)", () => {
  it.live("saved subscriptions follow their tables: a dropped one is removed and said loudly, a renamed one stays published under its new name", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      for (const t of ["t1", "t2", "t3"]) yield* pg.query(`CREATE TABLE ${t} (id int PRIMARY KEY)`)
      const first = yield* startManager("a", pg.url)
      for (const t of ["t1", "t2", "t3"]) yield* first.manager.add(table(t))
      yield* Fiber.interrupt(first.fiber)
      yield* pg.query("DROP TABLE t2")
      yield* pg.query("ALTER TABLE t3 RENAME TO t3_renamed")
      // a new table takes the dropped one's name: it is not the subscription's table
      yield* pg.query("CREATE TABLE t2 (id int)")
      const logged: Array<string> = []
      const second = yield* startManager("b", pg.url).pipe(Effect.provide(Logger.layer([Logger.make((o) => void logged.push(`${o.logLevel} ${String(o.message)}`))])))
      assert.deepStrictEqual((yield* second.manager.subscriptions).map((s) => `${s.id}:${s.name}`), ["t1:t1", "t3:t3_renamed"])
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.t1", "public.t3_renamed"])
      assert.deepStrictEqual(yield* pg.query("SELECT id, table_name FROM slotkeeper.subscriptions ORDER BY id"), [{ id: "t1", table_name: "t1" }, { id: "t3", table_name: "t3_renamed" }])
      assert.match(logged.join("\n"), /Error table public\.t2 \(subscription "t2"\) was dropped/)
      assert.match(logged.join("\n"), /Warn table public\.t3 \(subscription "t3"\) is now public\.t3_renamed: it stays published/)
      assert.deepStrictEqual((yield* SubscriptionRef.get(second.manager.status)).drift.map((d) => d.code).sort(), ["TableDropped", "TableRenamed"])
    }))

  it.live("configured differently (a rolling deploy): the instance started last sets the tables; an older one taking the stream back keeps them and says so", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      for (const t of ["a", "b"]) yield* pg.query(`CREATE TABLE ${t} (id int PRIMARY KEY)`)
      const old = yield* StreamOwnership.make({ streamId: "orders", instanceId: "old", url: Redacted.make(pg.url), ...fastTiming.advisory })
      yield* Effect.sleep("10 millis")
      const next = yield* StreamOwnership.make({ streamId: "orders", instanceId: "new", url: Redacted.make(pg.url), ...fastTiming.advisory })
      // the old version owns first, with its tables
      const oldRun = yield* holding(old, [table("a")])
      yield* oldRun.manager
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.a"])
      // the new version takes over (the old one stops): its tables
      const newRun = yield* holding(next, [table("a"), table("b")])
      yield* Fiber.interrupt(oldRun.fiber)
      yield* newRun.manager
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.a", "public.b"])
      // the old version takes the stream back (the new one is stopped, e.g. crashed): the tables stay the new version's
      const back = yield* holding(old, [table("a")])
      yield* Fiber.interrupt(newRun.fiber)
      const manager = yield* back.manager
      assert.deepStrictEqual(yield* publicationTables(pg), ["public.a", "public.b"])
      assert.match((yield* SubscriptionRef.get(manager.status)).disagreement ?? "", /instance old is configured with other tables .* instance new \(started later/)
      assert.deepStrictEqual(yield* pg.query("SELECT configured_by FROM slotkeeper.publications"), [{ configured_by: "new" }])
    }))
})
