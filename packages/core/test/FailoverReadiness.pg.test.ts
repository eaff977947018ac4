/**
 * A new, quiet stream becomes a safe failover target quickly: the standby's synchronized copy of the failover slot is
 * sync-ready (`synced AND NOT temporary AND invalidation_reason IS NULL` on the standby) within 15 s of the slot's
 * creation, in both slot modes, with nothing written to the published tables — and the instance reports it.
 */
import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, SubscriptionRef } from "effect"
import * as SlotManager from "../src/slot/SlotManager.ts"
import { recordingConsumer } from "./fault-helpers.ts"
import { eventually } from "./ownership-helpers.ts"

const cases = [
  ["temporary", "superuser"],
  ["persistent", "superuser"],
  ["temporary", "ordinary role"],
  ["persistent", "ordinary role"]
] as const

describe.each(cases)("failover readiness of a new, quiet stream (real PostgreSQL 18, %s slot mode, as a %s)", (mode, role) => {
  it.live("the standby's copy of the slot is sync-ready within 15 s of the slot's creation, and the instance says so", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* primary.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
      // an ordinary role may not log a running-transactions record itself (pg_log_standby_snapshot): the background
      // writer's, every 15 s while WAL is written, has to do
      if (role === "ordinary role") {
        yield* primary.query("CREATE ROLE app LOGIN REPLICATION")
        yield* primary.query("GRANT CREATE ON DATABASE postgres TO app")
        yield* primary.query("ALTER TABLE items OWNER TO app")
      }
      const standby = yield* Standby.make(primary)
      const slotState = yield* SlotManager.makeState
      const url = role === "superuser" ? primary.url : primary.urlWith({ user: "app" })
      yield* recordingConsumer("a", url, { slotState, delivery: { mode, standbys: [Redacted.make(standby.url)] } })
      yield* eventually(Effect.map(primary.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary AND failover"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the failover slot")
      const created = Date.now()
      yield* eventually(Effect.map(
        standby.query<{ ready: boolean }>("SELECT synced AND NOT temporary AND invalidation_reason IS NULL AS ready FROM pg_replication_slots WHERE slot_name = 'slotkeeper_orders_1'"),
        (rows) => (rows[0]?.ready === true ? true : undefined)
      ), 60_000, "the standby's copy sync-ready")
      const readyAfter = Date.now() - created
      console.log(`${mode}, ${role}: sync-ready on the standby ${readyAfter} ms after the slot's creation`)
      assert.isBelow(readyAfter, 15_000)
      // and the instance reports it (it asks the standby)
      yield* eventually(Effect.map(SubscriptionRef.get(slotState.failoverReady), (r) => (r === true ? true : undefined)), 15_000, "the instance reporting readiness")
    }))
})
