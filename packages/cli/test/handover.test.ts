/**
 * Handover between two `slotkeeper run` processes (the CLI as a child process) on a real PostgreSQL 18, in both lock
 * modes: the owner crashes (SIGKILL), or is cut off (a half-open partition: its connections go through a FaultProxy
 * that starts to swallow everything). A writer commits one row per transaction throughout; `DeliveryCheck` then
 * judges everything both printed against the table: nothing lost, nothing that was durably acknowledged delivered
 * again. `/health` and `/health/owner` are checked through each phase, and for the partition that the old owner gave
 * up (its own log) before the new one took over (its log).
 */
import { FaultProxy, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { freePort, get, ids, judgeHandover, loggedAt, start, streaming, until, untilEffect } from "./cli-helpers.ts"

/** Short but safe timings (the same rules as the defaults, checked by the CLI) so a handover takes seconds. */
const timing = {
  advisory: ["--heartbeat-interval", "200ms", "--loss-deadline", "1s", "--server-release-bound", "3s"],
  lease: ["--lease-duration", "3s", "--renew-interval", "500ms"]
} as const

const owner = (port: number) => Effect.map(get(port, "/health/owner"), (r) => r.status)

const handover = (lock: "advisory" | "lease", fault: "crash" | "partition") =>
  Effect.gen(function*() {
    const pg = yield* PgCluster.make({ major: 18 })
    yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    const proxy = yield* FaultProxy.make({ targetPort: pg.port })
    const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
    const args = (name: string, url: string, port: number) =>
      ["--database-url", url, "--table", "items", "--instance-id", name, "--http-port", String(port), "--lock", lock, ...timing[lock]]
    // a reaches the server only through the proxy, so the partition cuts a alone
    const a = yield* start(args("a", pg.urlWith({ host: proxy.host, port: proxy.port }), portA))
    yield* streaming(pg)
    const b = yield* start(args("b", pg.url, portB))
    yield* until(() => (/serving GET \/health/.test(b.stderr()) ? true : undefined), 30_000, "b's http server")
    assert.strictEqual(yield* owner(portA), 200)
    yield* untilEffect(Effect.map(get(portB, "/health"), (r) => ((r.body as { state: string }).state === "waiting" ? true : undefined)), 10_000, "b waiting")
    assert.strictEqual(yield* owner(portB), 503)

    const written = { next: 1 }
    const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const ok = yield* pg.query(`INSERT INTO items VALUES (${written.next}, 'x') ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
      if (ok) written.next++
      yield* Effect.sleep("10 millis")
    })))
    yield* until(() => (ids(a).length >= 30 ? true : undefined), 30_000, "a delivering")

    if (fault === "crash") {
      a.child.kill("SIGKILL")
      yield* Effect.promise(() => a.exited)
    } else {
      yield* proxy.setMode("blackhole")
      // a notices within its own deadline and says so, while still running
      yield* untilEffect(Effect.map(owner(portA), (s) => (s === 503 ? true : undefined)), 15_000, "a giving up ownership")
      assert.strictEqual(a.child.exitCode, null)
    }
    yield* untilEffect(Effect.map(owner(portB), (s) => (s === 200 ? true : undefined)), 30_000, "b owning")
    if (fault === "partition") {
      const lostAt = loggedAt(a, /ownership of stream default lost/)
      const acquiredAt = loggedAt(b, /ownership of stream default acquired/)
      assert.isDefined(lostAt, a.stderr())
      assert.isDefined(acquiredAt, b.stderr())
      assert.isBelow(lostAt!, acquiredAt!, "a gave up before b took over")
      assert.strictEqual(yield* owner(portA), 503)
    }
    const { committed, report } = yield* judgeHandover(pg, a, b, Fiber.interrupt(writer))
    assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
    assert.isAtLeast(committed.length, 60)
    if (fault === "partition") {
      // still cut off, a stops when told to, in bounded time and gracefully (it has nothing left to drain)
      const asked = Date.now()
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0)
      assert.isBelow(Date.now() - asked, 15_000)
    }
  })

describe("handover between two CLI processes (real PostgreSQL 18, FaultProxy for the partition)", () => {
  for (const lock of ["advisory", "lease"] as const) {
    it.live(`${lock}: SIGKILL of the owner; the waiting instance takes over; nothing lost, nothing acknowledged repeated`, () =>
      handover(lock, "crash"))

    it.live(`${lock}: half-open partition of the owner; it gives up before the other takes over; nothing lost, nothing acknowledged repeated`, () =>
      handover(lock, "partition"))
  }

  for (const lock of ["advisory", "lease"] as const) {
    it.live(`${lock}: the server crashes while the stream is quiet, then is down for 5 s: the instance never exits, competes again, and delivers what comes after`, () =>
      Effect.gen(function*() {
        const pg = yield* PgCluster.make({ major: 18 })
        yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
        const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--lock", lock, ...timing[lock]])
        yield* streaming(pg)
        yield* Effect.sleep("2 seconds") // quiet
        yield* pg.crash // every server process killed, crash recovery, back at once
        yield* until(() => ((a.stderr().match(/streaming from/g) ?? []).length >= 2 ? true : undefined), 30_000, "streaming again after the crash")
        yield* pg.query("INSERT INTO items VALUES (1, 'after the crash')")
        yield* until(() => (ids(a).includes(1) ? true : undefined), 30_000, "row 1")
        yield* pg.kill // down, for a while
        yield* Effect.sleep("5 seconds")
        yield* pg.start
        yield* pg.query("INSERT INTO items VALUES (2, 'after the outage')")
        yield* until(() => (ids(a).includes(2) ? true : undefined), 60_000, "row 2")
        assert.strictEqual(a.child.exitCode, null, a.stderr())
        assert.notMatch(a.stderr(), /SqlError|\n\s+at /, "no raw error, no stack trace")
      }))
  }
})
