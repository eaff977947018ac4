/**
 * Fencing reaches the sink: two `slotkeeper run` processes (the CLI as a child process) share one HTTP receiver that
 * enforces the ownership epoch (`FencingReceiver`: 409 for an epoch older than one that has written). The owner is
 * paused past the server's release bound, or its primary fails over behind the same address; the receiver must never
 * accept a batch of the old owner after the new owner's first, and nothing committed may be lost.
 */
import { FencingReceiver, PgCluster, ProcessControl, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { FaultProxy } from "@slotkeeper/testkit"
import { freePort, start, until, untilEffect } from "./cli-helpers.ts"

/** Short but safe timings (the same rules as the defaults, checked by the CLI) so a takeover takes seconds. */
const timing = {
  advisory: ["--heartbeat-interval", "200ms", "--loss-deadline", "1s", "--server-release-bound", "3s"],
  lease: ["--lease-duration", "3s", "--renew-interval", "500ms"]
} as const

type Receiver = FencingReceiver.FencingReceiver

/** `/health/owner`'s status, 0 while the instance's http server is not up yet. */
const owner = (port: number) =>
  Effect.tryPromise(() => fetch(`http://127.0.0.1:${port}/health/owner`).then((r) => r.status)).pipe(Effect.orElseSucceed(() => 0))

/** The ids the receiver accepted (inserts into `items`). */
const acceptedIds = (receiver: Receiver) =>
  receiver.accepted().filter((l) => l.type === "change" && l.table === "items").map((l) => Number((l.new as { id: number }).id))

/**
 * The receiver's view of the handover from `oldEpoch`: accepted batches of that epoch after the first accepted batch
 * of a newer one (must be none), and the stale requests it refused.
 */
const judge = (receiver: Receiver, oldEpoch: number) => {
  const firstNewer = receiver.requests.find((r) => r.status === 200 && r.epoch > oldEpoch)
  const lateAccepted = firstNewer === undefined ? [] : receiver.requests.filter((r) => r.status === 200 && r.epoch <= oldEpoch && r.at > firstNewer.at)
  return { firstNewer, lateAccepted: lateAccepted.length, staleAccepted: receiver.staleAccepted(), refused: receiver.refused() }
}

/** Waits until the receiver accepted every committed row; on a timeout, says which are missing and what the instances logged. */
const allAccepted = (receiver: Receiver, committed: ReadonlyArray<number>, instances: ReadonlyArray<{ readonly stderr: () => string }>) =>
  until(() => (committed.every((id) => acceptedIds(receiver).includes(id)) ? true : undefined), 60_000, "every committed row accepted").pipe(
    Effect.tapCause(() =>
      Effect.sync(() => {
        const got = new Set(acceptedIds(receiver))
        console.log(`missing: ${committed.filter((id) => !got.has(id)).slice(0, 20).join(", ")} of ${committed.length}`)
        console.log(`requests (epoch:status:lines): ${receiver.requests.map((r) => `${r.epoch}:${r.status}:${r.lines.length}`).join(" ")}`)
        for (const i of instances) console.log(i.stderr().slice(-3000))
      })
    )
  )

/** Commits one row per transaction into `items` every 10 ms, through faults, until interrupted. */
const writer = (pg: { query: (sql: string) => Effect.Effect<unknown, unknown> }) =>
  Effect.gen(function*() {
    const written = { next: 1 }
    const fiber = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const ok = yield* pg.query(`INSERT INTO items VALUES (${written.next}, 'x') ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
      if (ok) written.next++
      yield* Effect.sleep("10 millis")
    })))
    return fiber
  })

/**
 * A server, a receiver, instance "a" owning the stream and delivering 30 rows of a writer's, instance "b" waiting;
 * both with `extra` options.
 */
const ownerAndWaiter = (extra: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    const receiver = yield* FencingReceiver.make()
    const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
    const args = (name: string, port: number) =>
      ["--database-url", pg.url, "--table", "items", "--instance-id", name, "--http-port", String(port), "--sink", receiver.url, ...extra]
    const a = yield* start(args("a", portA))
    yield* untilEffect(Effect.map(owner(portA), (s) => (s === 200 ? true : undefined)), 30_000, "a owning")
    const b = yield* start(args("b", portB))
    const writing = yield* writer(pg)
    yield* until(() => (acceptedIds(receiver).length >= 30 ? true : undefined), 30_000, "a delivering")
    return { pg, receiver, a, b, portB, writing, epochA: receiver.highest.get("default")! }
  })

describe("fencing reaches the sink (two CLI processes, one FencingReceiver, real PostgreSQL 18)", () => {
  for (const lock of ["advisory", "lease"] as const) {
    it.live(`${lock}: the owner is paused (SIGSTOP) for 15 s; the other takes over; the receiver accepts no batch of the old owner after the new owner's first; nothing lost`, () =>
      Effect.gen(function*() {
        const { a, epochA, pg, portB, receiver, writing } = yield* ownerAndWaiter(["--lock", lock, ...timing[lock]])

        // a freezes mid-stream, well past the server's release bound; b takes over meanwhile
        yield* ProcessControl.whilePaused(a.child.pid!, Effect.gen(function*() {
          yield* untilEffect(Effect.map(owner(portB), (s) => (s === 200 ? true : undefined)), 30_000, "b owning")
          yield* until(() => ((receiver.highest.get("default") ?? 0) > epochA ? true : undefined), 30_000, "b's first batch")
          yield* Effect.sleep("15 seconds")
        }))
        // a wakes up with whatever it was holding; it gives up and competes again instead of writing
        yield* until(() => (/ownership of stream default lost \(epoch \d+\)/.test(a.stderr()) ? true : undefined), 15_000, "a noticing its loss")
        yield* Effect.sleep("2 seconds")
        assert.strictEqual(a.child.exitCode, null, "a keeps running (it competes again)")

        yield* Fiber.interrupt(writing)
        const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
        yield* allAccepted(receiver, committed, [a])
        const verdict = judge(receiver, epochA)
        assert.isDefined(verdict.firstNewer)
        assert.deepStrictEqual({ lateAccepted: verdict.lateAccepted, staleAccepted: verdict.staleAccepted }, { lateAccepted: 0, staleAccepted: 0 })
        assert.isAtLeast(committed.length, 60)
        console.log(`${lock} pause: ${committed.length} rows, epochs ${epochA} -> ${receiver.highest.get("default")}, stale requests refused by the receiver: ${verdict.refused}`)
      }))
  }

  for (const lock of ["advisory", "lease"] as const) {
    it.live(`${lock}: the primary fails over behind the same address (a moving proxy); no batch of the old owner is accepted after the new owner's first; nothing the new primary has is lost`, () =>
      Effect.gen(function*() {
        const primary = yield* PgCluster.make({ major: 18 })
        yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
        const standby = yield* Standby.make(primary)
        const vip = yield* FaultProxy.make({ targetPort: primary.port })
        const url = primary.urlWith({ host: vip.host, port: vip.port })
        const receiver = yield* FencingReceiver.make()
        const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
        const args = (name: string, port: number) =>
          ["--database-url", url, "--table", "items", "--instance-id", name, "--http-port", String(port), "--lock", lock, "--sink", receiver.url, ...timing[lock]]
        yield* start(args("a", portA))
        yield* untilEffect(Effect.map(owner(portA), (s) => (s === 200 ? true : undefined)), 30_000, "a owning")
        yield* start(args("b", portB))
        const writing = yield* writer(primary)
        yield* until(() => (acceptedIds(receiver).length >= 20 ? true : undefined), 30_000, "a delivering")
        // the standby's copy of the failover slot must be sync-ready before the failover (a safe target)
        yield* untilEffect(Effect.gen(function*() {
          yield* primary.query("SELECT pg_log_standby_snapshot()::text")
          const rows = yield* standby.query<{ ready: boolean }>(
            "SELECT synced AND NOT temporary AND invalidation_reason IS NULL AS ready FROM pg_replication_slots WHERE slot_name = 'slotkeeper_default_1'"
          )
          return rows[0]?.ready === true ? true : undefined
        }), 90_000, "the standby's slot sync-ready")
        const epochA = receiver.highest.get("default")!

        // the primary dies (every connection to it reset), the standby is promoted, the address moves to it
        yield* vip.setMode("reset")
        yield* Fiber.interrupt(writing)
        yield* primary.stop
        yield* standby.promote
        yield* vip.setTarget(standby.port)
        yield* vip.setMode("pass")
        const [top] = yield* standby.query<{ n: number }>("SELECT coalesce(max(id), 0) AS n FROM items")
        for (let id = top!.n + 1; id <= top!.n + 30; id++) yield* standby.query(`INSERT INTO items VALUES (${id}, 'after the failover')`)

        const committed = (yield* standby.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
        yield* allAccepted(receiver, committed, [])
        const verdict = judge(receiver, epochA)
        assert.deepStrictEqual({ lateAccepted: verdict.lateAccepted, staleAccepted: verdict.staleAccepted }, { lateAccepted: 0, staleAccepted: 0 })
        // the rows written after the failover came under an ownership held on the new primary
        const afterFailover = new Set(committed.filter((id) => id > top!.n))
        const epochs = receiver.requests.filter((r) => r.status === 200).flatMap((r) =>
          r.lines.filter((l) => l.type === "change" && afterFailover.has(Number((l.new as { id: number }).id))).map(() => r.epoch))
        if (lock === "advisory") assert.isAbove(Math.min(...epochs), epochA) // the advisory lock did not survive the failover
        console.log(`${lock} failover: ${committed.length} rows on the new primary, epochs after it ${[...new Set(epochs)].join(",")}, refused ${verdict.refused}`)
      }))
  }

  it.live("advisory: an administrator terminates the owner's lock session (the server hands the lock over at once, the owner learns it at its next heartbeat): no batch of the old owner is accepted after the new owner's first; nothing lost", () =>
    Effect.gen(function*() {
      // a slow heartbeat: the window in which the deposed owner still believes it owns the stream is up to 1 s
      const { a, b, epochA, pg, receiver, writing } = yield* ownerAndWaiter(
        ["--heartbeat-interval", "1s", "--loss-deadline", "3s", "--server-release-bound", "6s", "--acquire-interval", "100ms"]
      )
      const [lock] = yield* pg.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'slotkeeper:default:a:lock'")
      yield* pg.terminateBackend(lock!.pid)
      yield* until(() => ((receiver.highest.get("default") ?? 0) > epochA ? true : undefined), 30_000, "b's first batch")
      yield* until(() => (/ownership of stream default lost/.test(a.stderr()) ? true : undefined), 15_000, "a noticing its loss")
      yield* Effect.sleep("1 second")
      yield* Fiber.interrupt(writing)
      const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
      yield* allAccepted(receiver, committed, [a, b])
      const verdict = judge(receiver, epochA)
      assert.deepStrictEqual({ lateAccepted: verdict.lateAccepted, staleAccepted: verdict.staleAccepted }, { lateAccepted: 0, staleAccepted: 0 })
      console.log(`terminated lock session: ${committed.length} rows, epochs ${epochA} -> ${receiver.highest.get("default")}, stale requests refused: ${verdict.refused}`)
    }))
})
