import { PgConnection } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Redacted, Scope } from "effect"
import * as PgCluster from "../src/PgCluster.ts"
import * as ProcessControl from "../src/ProcessControl.ts"

describe("ProcessControl", () => {
  it.live("a paused backend answers nothing until resumed, and the scope always resumes it", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const conn = yield* PgConnection.make({ url: Redacted.make(pg.url), applicationName: "paused-backend" })
      const pid = conn.processId
      const pausedScope = yield* Scope.make()
      // closed by the test below, and by the test's own scope if an assertion fails first (before the cluster stops)
      yield* Effect.addFinalizer(() => Scope.close(pausedScope, Exit.void))
      yield* Scope.provide(pausedScope)(ProcessControl.paused(pid))
      assert.isTrue(ProcessControl.isPaused(pid))
      const query = yield* Effect.forkChild(conn.query("SELECT 1 AS one"), { startImmediately: true })
      assert.isTrue(Option.isNone(yield* Fiber.await(query).pipe(Effect.timeoutOption("500 millis"))))
      yield* Scope.close(pausedScope, Exit.void)
      // the scope closed: the backend runs again and the held query completes
      assert.isFalse(ProcessControl.isPaused(pid))
      assert.deepStrictEqual((yield* Fiber.join(query)).rows, [{ one: 1 }])
    }))

  it.live("pausing a process that does not exist is a typed error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ProcessControl.pause(2 ** 22 + 12345))
      assert.strictEqual(error._tag, "ProcessControlError")
    }))
})
