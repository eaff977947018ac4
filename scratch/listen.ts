import { Effect, Queue, Redacted, Duration } from "effect"
import { PgConnection } from "@effect/sql-pg"
import { PgCluster } from "@slotkeeper/testkit"

const program = Effect.scoped(Effect.gen(function*() {
  const pg = yield* PgCluster.make()
  const url = (pg as any).url
  const opts = { url: typeof url === "string" ? Redacted.make(url) : url }
  const conn = yield* PgConnection.make(opts as any)
  const other = yield* PgConnection.make(opts as any)
  const pinned = yield* conn.pin
  const q = yield* pinned.listen("slotkeeper_released")
  const r1 = yield* pinned.query("SELECT pg_try_advisory_lock(1,2) AS ok")
  console.log("query while listening (pinned):", r1.rows)
  yield* other.query("SELECT pg_notify('slotkeeper_released', 'orders')")
  const n = yield* Queue.take(q).pipe(Effect.timeoutOption(Duration.seconds(2)))
  console.log("notification:", n)
  const r2 = yield* pinned.query("SELECT 1 AS x")
  console.log("after:", r2.rows)
  yield* other.query("SELECT pg_notify('slotkeeper_released', 'again')")
  const r3 = yield* pinned.query("SELECT pg_sleep(0.1), 2 AS x")
  const n2 = yield* Queue.take(q).pipe(Effect.timeoutOption(Duration.seconds(2)))
  console.log("notification during a query:", n2, r3.rows)
}))
Effect.runPromise(program as any).then(() => console.log("ok"), (e) => console.error("fail", e))
