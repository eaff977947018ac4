/**
 * PostgreSQL 18's `idle_replication_slot_timeout` invalidates a slot left inactive — the stream's persistent slot,
 * whenever no instance runs. `check` warns of a timeout shorter than a day; while the stream runs `/health` and
 * `/metrics` show the time left on its slot; stopped, `status` shows since when the slot is inactive and the time
 * left. (Real PostgreSQL 18 with the timeout at its minimum, one minute; the warning threshold and an invalidation by
 * it are `Health`'s pure tests, which need no waiting.)
 */
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, freePort, get, start, streaming, untilEffect } from "./cli-helpers.ts"

describe("idle_replication_slot_timeout (the CLI, real PostgreSQL 18)", () => {
  it.live("check warns of it; /health, /metrics and status show the time left on the stream's slot", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18, settings: { idle_replication_slot_timeout: "1min" } })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY)")
      const check = yield* cli("check", "--database-url", pg.url, "--table", "items", "--json")
      const idle = (JSON.parse(check.stdout) as { checks: Array<{ name: string; level: string; message: string }> }).checks.find((c) => c.name === "idle slot timeout")
      assert.strictEqual(idle?.level, "warn")
      assert.match(idle!.message, /idle_replication_slot_timeout is 60 s: the server invalidates the stream's slot when no instance has run for that long.*set it to at least 24 h 0 min \(or 0\)/)

      const http = yield* Effect.promise(() => freePort())
      const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--http-port", String(http)])
      yield* streaming(pg)
      // the persistent slot is inactive between the owner's advances: its countdown is on /health and /metrics
      const slot = yield* untilEffect(
        Effect.map(get(http, "/health"), (r) => {
          const s = (r.body as { slot?: { name: string; inactive_since: string | null; idle_timeout_left_seconds: number | null } }).slot
          return s?.idle_timeout_left_seconds == null ? undefined : s
        }),
        30_000,
        "the slot's countdown in /health"
      )
      assert.strictEqual(slot.name, "slotkeeper_default_1")
      assert.isNotNull(slot.inactive_since)
      assert.isAbove(slot.idle_timeout_left_seconds!, 0)
      assert.isAtMost(slot.idle_timeout_left_seconds!, 60)
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${http}/metrics`).then((r) => r.text()))
      const gauge = /^slotkeeper_slot_idle_timeout_left_seconds\{[^}]*slot="slotkeeper_default_1"[^}]*\} ([0-9.]+)/m.exec(metrics)
      assert.isNotNull(gauge, metrics.split("\n").filter((l: string) => l.includes("slot")).join("\n"))
      assert.isAtMost(Number(gauge![1]), 60)

      // stopped: nothing advances the slot any more; status says since when, and how long it has left
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0, a.stderr().slice(-2000))
      const status = yield* cli("status", "--database-url", pg.url, "--json")
      const [stream] = (JSON.parse(status.stdout) as { streams: Array<{ slots: Array<{ slot: string; inactiveSince: string | null; idleTimeoutLeftSeconds: number | null }> }> }).streams
      const persistent = stream!.slots.find((s) => s.slot === "slotkeeper_default_1")!
      assert.isNotNull(persistent.inactiveSince)
      assert.isAbove(persistent.idleTimeoutLeftSeconds!, 0)
      assert.isAtMost(persistent.idleTimeoutLeftSeconds!, 60)
      const text = yield* cli("status", "--database-url", pg.url)
      assert.match(text.stdout, /slotkeeper_default_1 \[active\]: idle, .*invalidated by idle_replication_slot_timeout in \d+ s/)
    }))
})
