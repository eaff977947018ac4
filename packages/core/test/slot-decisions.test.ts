import { assert, describe, it } from "@effect/vitest"
import * as Lsn from "../src/Lsn.ts"
import * as AdvanceTarget from "../src/slot/AdvanceTarget.ts"
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
    assert.strictEqual(refused(Resume.decide(durable, slot, { ...promoted, switchPoints: new Map() })), "PositionOnLostTimeline")
  })
})
