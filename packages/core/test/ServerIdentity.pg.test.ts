import { PgCluster, Standby } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as Lsn from "../src/Lsn.ts"
import * as Resume from "../src/slot/Resume.ts"
import * as ServerIdentity from "../src/slot/ServerIdentity.ts"

describe("ServerIdentity (real PostgreSQL 18)", () => {
  it("parses timeline history files", () => {
    const points = ServerIdentity.parseHistory("1\t0/3000000\tno recovery target specified\n2\t0/5000A28\tbefore 2000-01-01\n\n")
    assert.deepStrictEqual([...points], [[1, 0x3000000n], [2, 0x5000a28n]])
  })

  it.live("a primary, then its promoted standby: same system, the next timeline, and the switch point that decides a resume", () =>
    Effect.gen(function*() {
      const primary = yield* PgCluster.make({ major: 18 })
      const before = yield* ServerIdentity.read(Redacted.make(primary.url), "slotkeeper-test")
      const [control] = yield* primary.query<{ id: string }>("SELECT system_identifier::text AS id FROM pg_control_system()")
      assert.deepInclude(before, { systemId: control!.id, timeline: 1, database: "postgres" })
      assert.strictEqual(before.switchPoints.size, 0)

      const standby = yield* Standby.make(primary, { slotSync: "off" })
      yield* primary.query("CREATE TABLE t (x int)")
      yield* primary.query("INSERT INTO t VALUES (1)")
      const [durable] = yield* primary.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")
      yield* standby.waitForReplay
      yield* standby.promote
      yield* primary.stop
      const after = yield* ServerIdentity.read(Redacted.make(standby.url), "slotkeeper-test")
      assert.deepInclude(after, { systemId: before.systemId, timeline: 2 })
      const switchPoint = after.switchPoints.get(1)!
      assert.isTrue(switchPoint >= Lsn.parseUnsafe(durable!.lsn))

      // the resume decision with this real identity
      const slot: Resume.SlotState = { slotName: "s_1", exists: true, confirmedFlush: 0n, invalidationReason: undefined, walStatus: "reserved", conflicting: false }
      const position = { systemId: before.systemId, timeline: 1, slotName: "s_1" }
      assert.strictEqual(Resume.decide({ ...position, lsn: switchPoint }, slot, after)._tag, "Resume")
      const lost = Resume.decide({ ...position, lsn: switchPoint + 1n }, slot, after)
      assert.strictEqual(lost._tag === "Refuse" ? lost.error.reason : lost._tag, "PositionOnLostTimeline")
      // and the old primary, were it still running, would be refused by timeline
      const old = Resume.decide({ ...position, timeline: 2, lsn: 0n }, slot, before)
      assert.strictEqual(old._tag === "Refuse" ? old.error.reason : old._tag, "TimelineBehind")
    }))
})
