import { spawn } from "node:child_process"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { FaultProxy, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { PgoutputPlugin } from "pg-logical-replication"
import { eventually } from "./ownership-helpers.ts"
import { CopyingPlugin, inserts, openStream } from "./replication-helpers.ts"

const fixture = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "stream-from-clone.ts")

const prepare = (pg: { query: (sql: string) => Effect.Effect<unknown, unknown> }) =>
  Effect.gen(function*() {
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, name text)")
    yield* pg.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
    yield* pg.query("SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_orders_1', 'pgoutput')")
  })

const slotRows = (pg: PgServerLike) =>
  pg.query<{ slot_name: string; temporary: boolean; active: boolean }>("SELECT slot_name, temporary, active FROM pg_replication_slots ORDER BY temporary, slot_name")

type PgServerLike = Effect.Success<ReturnType<typeof PgCluster.make>>

describe("TemporaryClone (real PostgreSQL)", () => {
  it.live("streams from a temporary copy made on the replication session; the persistent slot is never held; the copy ends with the session", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* prepare(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'before')")
      const plugin = new CopyingPlugin({ protoVersion: 1, publicationNames: ["slotkeeper_orders"] }, "slotkeeper_orders_1")
      const scope = yield* Scope.make()
      const stream = yield* Scope.provide(scope)(openStream(pg.url, plugin, "slotkeeper_orders_1"))
      yield* pg.query("INSERT INTO items VALUES (2, 'during')")
      assert.deepStrictEqual(yield* inserts(stream, 2), [{ id: 1, name: "before" }, { id: 2, name: "during" }])
      assert.deepStrictEqual(yield* slotRows(pg), [
        { slot_name: "slotkeeper_orders_1", temporary: false, active: false },
        { slot_name: plugin.clone, temporary: true, active: true }
      ])
      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.map(slotRows(pg), (rows) => (rows.length === 1 ? true : undefined)), 10_000, "the clone to disappear")
    }))

  it.live("kill -9 of an instance: its temporary slot disappears, and the next one streams at once", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* prepare(pg)
      const child = spawn(process.execPath, [fixture, pg.url, "slotkeeper_orders_1", "slotkeeper_orders"], { stdio: ["ignore", "pipe", "pipe"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      const started = yield* Effect.callback<{ clone: string }, Error>((resume) => {
        let out = ""
        child.stdout!.on("data", (d: Buffer) => {
          out += d.toString()
          const line = out.split("\n").find((l) => l.startsWith("{"))
          if (line) resume(Effect.succeed(JSON.parse(line) as { clone: string }))
        })
        child.on("exit", (code) => resume(Effect.fail(new Error(`fixture exited with ${code}`))))
      })
      assert.deepInclude(yield* slotRows(pg), { slot_name: started.clone, temporary: true, active: true })
      const killedAt = Date.now()
      child.kill("SIGKILL")
      // the kernel closes the dead process's socket: the walsender ends and its temporary slot is dropped
      yield* eventually(Effect.map(slotRows(pg), (rows) => (rows.some((r) => r.slot_name === started.clone) ? undefined : true)), 10_000, "the clone to disappear")
      // the next instance clones the (never held) persistent slot and streams at once
      const next = yield* openStream(pg.url, new CopyingPlugin({ protoVersion: 1, publicationNames: ["slotkeeper_orders"] }, "slotkeeper_orders_1"), "slotkeeper_orders_1")
      yield* pg.query("INSERT INTO items VALUES (3, 'after the kill')")
      assert.deepStrictEqual(yield* inserts(next, 1), [{ id: 3, name: "after the kill" }])
      assert.isAtMost(Date.now() - killedAt, 5_000)
    }))

  it.live("half-open path: a persistent slot stays held ('active for PID'); a clone-based successor is not blocked", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* prepare(pg)
      const proxy = yield* FaultProxy.make({ targetPort: pg.port })
      const viaProxy = pg.urlWith({ port: proxy.port })
      // the old instance streams the persistent slot directly, through a path that then goes half-open
      const direct = new PgoutputPlugin({ protoVersion: 1, publicationNames: ["slotkeeper_orders"] })
      const old = yield* openStream(viaProxy, direct, "slotkeeper_orders_1")
      yield* pg.query("INSERT INTO items VALUES (1, 'x')")
      yield* inserts(old, 1)
      yield* proxy.setMode("blackhole")
      // a successor streaming the persistent slot directly is refused while the server keeps the old walsender
      const blocked = yield* openStream(pg.url, new PgoutputPlugin({ protoVersion: 1, publicationNames: ["slotkeeper_orders"] }), "slotkeeper_orders_1")
      const refusal = yield* Effect.promise(() => blocked.ended.then(() => "ended", (e: Error) => e.message))
      assert.match(refusal, /replication slot "slotkeeper_orders_1" is active for PID \d+/)
      // a successor streaming from a clone is not
      const next = yield* openStream(pg.url, new CopyingPlugin({ protoVersion: 1, publicationNames: ["slotkeeper_orders"] }, "slotkeeper_orders_1"), "slotkeeper_orders_1")
      yield* pg.query("INSERT INTO items VALUES (2, 'y')")
      const rows = yield* inserts(next, 2)
      assert.deepStrictEqual(rows.map((r) => r.id), [1, 2]) // from the persistent slot's position: nothing was acknowledged
      yield* proxy.setMode("pass")
    }))
})
