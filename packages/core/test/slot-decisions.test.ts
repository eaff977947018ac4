import { assert, describe, it } from "@effect/vitest"
import * as Lsn from "../src/Lsn.ts"
import * as AdvanceTarget from "../src/slot/AdvanceTarget.ts"
import * as Health from "../src/slot/Health.ts"
import * as Resume from "../src/slot/Resume.ts"

describe("Lsn (pure)", () => {
  it("parses and formats X/Y positions", () => {
    assert.strictEqual(Lsn.parse("0/16B3748"), 0x16b3748n)
    assert.strictEqual(Lsn.parse("1/0"), 1n << 32n)
    assert.strictEqual(Lsn.format(0x1_0000_00ffn), "1/FF")
    assert.strictEqual(Lsn.format(Lsn.parseUnsafe("AB/CDEF0123")), "AB/CDEF0123")
  })
  it("rejects malformed text with a typed error", () => {
    for (const text of ["", "16B3748", "0/", "g/1", "0/123456789", "0/1; drop"]) {
      const r = Lsn.parse(text)
      assert.strictEqual(typeof r === "bigint" ? "bigint" : r._tag, "InvalidLsn")
    }
  })
})

describe("AdvanceTarget (pure)", () => {
  it("moves to the acknowledged position when there is no window", () => {
    assert.strictEqual(AdvanceTarget.target({ acknowledged: 1000n, current: 400n, windowBytes: 0n }), 1000n)
  })
  it("keeps the resumable window behind the acknowledged position", () => {
    assert.strictEqual(AdvanceTarget.target({ acknowledged: 1000n, current: 400n, windowBytes: 300n }), 700n)
  })
  it("never moves backwards, never below zero", () => {
    assert.isUndefined(AdvanceTarget.target({ acknowledged: 1000n, current: 800n, windowBytes: 300n }))
    assert.isUndefined(AdvanceTarget.target({ acknowledged: 1000n, current: 1000n, windowBytes: 0n }))
    assert.isUndefined(AdvanceTarget.target({ acknowledged: 100n, current: 0n, windowBytes: 300n }))
  })
  it("never passes the acknowledged position", () => {
    for (let acknowledged = 0n; acknowledged < 50n; acknowledged += 7n) {
      for (const windowBytes of [0n, 3n, 100n]) {
        const t = AdvanceTarget.target({ acknowledged, current: 0n, windowBytes })
        if (t !== undefined) assert.isTrue(t <= acknowledged)
      }
    }
  })
})

describe("Resume (pure)", () => {
  const server = { systemId: "7000", timeline: 1, switchPoints: new Map<number, bigint>() }
  const slot: Resume.SlotState = { slotName: "slotkeeper_orders_1", exists: true, confirmedFlush: 900n, invalidationReason: undefined, walStatus: "reserved", conflicting: false }
  const durable: Resume.DurablePosition = { lsn: 1000n, systemId: "7000", timeline: 1, slotName: "slotkeeper_orders_1" }
  const refused = (d: Resume.Decision) => (d._tag === "Refuse" ? d.error.reason : d._tag)

  it("resumes from the durable position when the slot is at or behind it (duplicates are skipped later)", () => {
    assert.deepStrictEqual(Resume.decide(durable, slot, server), { _tag: "Resume", from: 1000n })
    assert.deepStrictEqual(Resume.decide(durable, { ...slot, confirmedFlush: 1000n }, server), { _tag: "Resume", from: 1000n })
  })
  it("a first run starts from the slot", () => {
    assert.deepStrictEqual(Resume.decide(undefined, slot, server), { _tag: "StartFromSlot" })
  })
  it("a slot ahead of the durable position is a gap, loudly", () => {
    const d = Resume.decide(durable, { ...slot, confirmedFlush: 1001n }, server)
    assert.strictEqual(refused(d), "SlotAhead")
    assert.match(d._tag === "Refuse" ? d.error.message : "", /0\/3E9, ahead of the durable position 0\/3E8/)
  })
  it("missing, invalidated, lost or conflicting slots are refused", () => {
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, exists: false }, server)), "SlotMissing")
    assert.strictEqual(refused(Resume.decide(undefined, { ...slot, exists: false }, server)), "SlotMissing")
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, invalidationReason: "wal_removed" }, server)), "SlotInvalidated")
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, walStatus: "lost" }, server)), "SlotInvalidated")
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, conflicting: true }, server)), "SlotInvalidated")
  })
  it("another incarnation, another cluster, an old primary are refused", () => {
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, slotName: "slotkeeper_orders_2" }, server)), "SlotIncarnationChanged")
    assert.strictEqual(refused(Resume.decide(durable, slot, { ...server, systemId: "7001" })), "SystemMismatch")
    assert.strictEqual(refused(Resume.decide({ ...durable, timeline: 2 }, slot, server)), "TimelineBehind")
  })
  it("after a failover, the position must lie at or before its timeline's switch point", () => {
    const promoted = { systemId: "7000", timeline: 2, switchPoints: new Map([[1, 1000n]]) }
    assert.deepStrictEqual(Resume.decide(durable, slot, promoted), { _tag: "Resume", from: 1000n })
    assert.strictEqual(refused(Resume.decide({ ...durable, lsn: 1001n }, slot, promoted)), "PositionOnLostTimeline")
    // after a failover, only the slot synchronized from the old primary carries the position (17+)
    assert.deepStrictEqual(Resume.decide(durable, { ...slot, synced: true }, promoted), { _tag: "Resume", from: 1000n })
    assert.strictEqual(refused(Resume.decide(durable, { ...slot, synced: false }, promoted)), "SlotNotSynchronized")
    assert.deepStrictEqual(Resume.decide(durable, { ...slot, synced: false }, server), { _tag: "Resume", from: 1000n }) // no failover: a primary's own slot
    assert.strictEqual(refused(Resume.decide(durable, slot, { ...promoted, switchPoints: new Map() })), "PositionOnLostTimeline")
  })

  it("a slot invalidated by idle_replication_slot_timeout (18) is refused as such, not as lost WAL", () => {
    const message = (d: Resume.Decision) => (d._tag === "Refuse" ? d.error.message : "")
    const decision = Resume.decide(durable, { ...slot, invalidationReason: "idle_timeout" }, server)
    assert.strictEqual(refused(decision), "SlotInvalidated")
    assert.match(message(decision), /invalidated by idle_replication_slot_timeout \(idle_timeout\): no instance of the stream ran for longer than the timeout/)
    assert.match(message(Resume.decide(durable, { ...slot, invalidationReason: "wal_removed" }, server)), /the WAL it needed is gone/)
  })
})


describe("Health (pure)", () => {
  const row: Health.SlotRow = {
    slotName: "slotkeeper_orders_1", active: false, activePid: undefined, temporary: false,
    restartLsn: 1_000n, confirmedFlush: 1_500n, walStatus: "reserved", safeWalSize: undefined,
    conflicting: false, invalidationReason: undefined, inactiveSince: undefined, failover: true, synced: false
  }
  const thresholds: Health.Thresholds = { retainedWarnBytes: 1n << 30n, safeWalWarnBytes: 64n << 20n, wantFailover: true }
  const codes = (a: Health.Assessment) => a.findings.map((f) => f.code)

  it("a healthy slot: ok, with its lag", () => {
    const a = Health.assess("slotkeeper_orders_1", row, 2_000n, thresholds)
    assert.deepStrictEqual({ level: a.level, retained: a.retainedBytes, lag: a.flushLagBytes, codes: codes(a) }, { level: "ok", retained: 1_000n, lag: 500n, codes: [] })
  })
  it("warns before trouble: extended, unreserved, low safe_wal_size, much WAL retained, not a failover slot", () => {
    assert.deepStrictEqual(codes(Health.assess("s", { ...row, walStatus: "extended" }, 2_000n, thresholds)), ["WalExtended"])
    assert.deepStrictEqual(codes(Health.assess("s", { ...row, walStatus: "unreserved", safeWalSize: 1n << 20n }, 2_000n, thresholds)), ["WalUnreserved", "SafeWalLow"])
    assert.deepStrictEqual(codes(Health.assess("s", row, (2n << 30n), thresholds)), ["RetainedHigh"])
    assert.deepStrictEqual(codes(Health.assess("s", { ...row, failover: false }, 2_000n, thresholds)), ["NotFailover"])
    assert.strictEqual(Health.assess("s", { ...row, walStatus: "extended" }, 2_000n, thresholds).level, "warn")
  })
  it("missing and invalidated slots are errors", () => {
    assert.deepStrictEqual(codes(Health.assess("s", undefined, 2_000n, thresholds)), ["SlotMissing"])
    const lost = Health.assess("s", { ...row, walStatus: "lost", invalidationReason: "wal_removed" }, 2_000n, thresholds)
    assert.deepStrictEqual({ level: lost.level, codes: codes(lost) }, { level: "error", codes: ["SlotInvalidated"] })
    assert.match(lost.findings[0]!.message, /wal_removed/)
  })
  it("idle_replication_slot_timeout (18): the time left while inactive, a warning from half of it, and an invalidation by it said as such", () => {
    const idle = { ...row, inactiveSince: "2026-12-05 00:00:00+00", inactiveSeconds: 100, idleTimeoutSeconds: 600 }
    const early = Health.assess("s", idle, 2_000n, thresholds)
    assert.deepStrictEqual({ left: early.idleTimeoutLeftSeconds, since: early.inactiveSince, codes: codes(early) }, { left: 500, since: "2026-12-05 00:00:00+00", codes: [] })
    const near = Health.assess("s", { ...idle, inactiveSeconds: 420 }, 2_000n, thresholds)
    assert.deepStrictEqual({ left: near.idleTimeoutLeftSeconds, level: near.level, codes: codes(near) }, { left: 180, level: "warn", codes: ["IdleTimeoutNear"] })
    assert.strictEqual(near.findings[0]!.message, "replication slot s has been inactive for 7 min: the server invalidates it 3 min from now (idle_replication_slot_timeout 10 min) unless an instance of the stream runs")
    // past it (the server acts at its next checkpoint): none left
    assert.strictEqual(Health.assess("s", { ...idle, inactiveSeconds: 700 }, 2_000n, thresholds).idleTimeoutLeftSeconds, 0)
    // active, or without the timeout: nothing to count down
    assert.isUndefined(Health.assess("s", { ...idle, active: true }, 2_000n, thresholds).idleTimeoutLeftSeconds)
    assert.isUndefined(Health.assess("s", { ...idle, idleTimeoutSeconds: undefined }, 2_000n, thresholds).idleTimeoutLeftSeconds)
    const invalidated = Health.assess("s", { ...idle, inactiveSeconds: 900, invalidationReason: "idle_timeout" }, 2_000n, thresholds)
    assert.deepStrictEqual({ level: invalidated.level, codes: codes(invalidated), left: invalidated.idleTimeoutLeftSeconds }, { level: "error", codes: ["SlotInvalidated"], left: undefined })
    assert.match(invalidated.findings[0]!.message, /invalidated by idle_replication_slot_timeout \(idle_timeout\): it was inactive for longer than 10 min/)
  })
  it("columns an older server lacks are not judged", () => {
    const pg15 = { ...row, invalidationReason: undefined, failover: undefined, synced: undefined, inactiveSince: undefined }
    assert.strictEqual(Health.assess("s", pg15, 2_000n, thresholds).level, "ok")
  })
})
