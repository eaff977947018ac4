/**
 * Capture has begun before an instance calls itself the owner: on a new stream, `/health/owner` answers 200 only once
 * the slot exists and the replication connection streams, so rows written right after the first 200 are delivered.
 * The capture start is named in `/health`, `/metrics` and the log.
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { freePort, ids, start, until, untilEffect } from "./cli-helpers.ts"

const probe = (port: number, path: string) =>
  Effect.tryPromise(() => fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => ({ status: r.status, text: await r.text() }))).pipe(
    Effect.orElseSucceed(() => ({ status: 0, text: "" }))
  )

describe("capture readiness (the CLI as a child process, real PostgreSQL 18)", () => {
  for (const mode of ["temporary", "persistent"] as const) {
    it.live(`${mode} slot: 50 rows inserted one by one right after /health/owner first answers 200 on a new stream are all delivered; /health names the capture start`, () =>
      Effect.gen(function*() {
        const pg = yield* PgCluster.make({ major: 18 })
        yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
        const port = yield* Effect.promise(freePort)
        const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--http-port", String(port), "--slot-mode", mode])
        // as a service waiting for its CDC to be ready would: poll, and write the moment it says so
        const seen = new Set<number>()
        yield* untilEffect(Effect.map(probe(port, "/health/owner"), (r) => {
          seen.add(r.status)
          return r.status === 200 ? true : undefined
        }), 30_000, "/health/owner 200")
        for (let id = 1; id <= 50; id++) yield* pg.query(`INSERT INTO items VALUES (${id}, 'right after the first 200')`)
        yield* until(() => (ids(a).length >= 50 ? true : undefined), 30_000, "50 rows delivered")
        assert.deepStrictEqual(ids(a), Array.from({ length: 50 }, (_, i) => i + 1))
        // the capture start: where the slot was created, in /health, /metrics and the log
        const health = JSON.parse((yield* probe(port, "/health")).text) as { state: string; capturing: boolean; capture_start_lsn: string; epoch: number }
        assert.deepInclude(health, { state: "active", capturing: true, epoch: 1 })
        const [slot] = yield* pg.query<{ point: string }>("SELECT consistent_point::text AS point FROM slotkeeper.slots WHERE state = 'active'")
        assert.strictEqual(health.capture_start_lsn, slot!.point)
        assert.match((yield* probe(port, "/metrics")).text, /slotkeeper_capturing\{stream="default"\} 1/)
        assert.include(a.stderr(), `capture starts at ${slot!.point}: every transaction that commits after it is delivered`)
        assert.isTrue(seen.has(503) || seen.has(0), "the probe saw the instance before it captured")
      }))
  }
})
