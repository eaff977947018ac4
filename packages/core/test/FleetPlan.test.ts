/** FleetPlan (pure): what a change starts and stops, and which streams should run on this runner now. */
import { assert, describe, it } from "@effect/vitest"
import * as FleetPlan from "../src/fleet/FleetPlan.ts"

describe("FleetPlan (pure)", () => {
  it("new streams start, removed ones stop, changed ones stop then start, unchanged ones are left alone", () => {
    const current = new Map([["a", "1"], ["b", "1"], ["c", "1"]])
    assert.deepStrictEqual(FleetPlan.plan(current, [{ id: "a", version: "1" }, { id: "c", version: "2" }, { id: "d", version: "1" }]), {
      start: ["c", "d"],
      stop: ["b", "c"]
    })
    assert.deepStrictEqual(FleetPlan.plan(current, [{ id: "a", version: "1" }, { id: "b", version: "1" }, { id: "c", version: "1" }]), { start: [], stop: [] })
    assert.deepStrictEqual(FleetPlan.plan(new Map(), [{ id: "a", version: "1" }]), { start: ["a"], stop: [] })
    assert.deepStrictEqual(FleetPlan.plan(current, []), { start: [], stop: ["a", "b", "c"] })
  })

  it("wanted: placed here runs; placed elsewhere is kept for the rebalance delay, counted while present; missing keeps all; lost or unlisted stops", () => {
    const base = { placedHere: new Set(["a"]), running: ["a", "b", "c"], listed: new Set(["a", "b", "c"]), present: true, lost: false, now: 1000, elsewhereSince: new Map<string, number>(), rebalanceDelayMs: 10_000 }
    const first = FleetPlan.wanted(base)
    assert.deepStrictEqual([...first.mine].sort(), ["a", "b", "c"])
    assert.deepStrictEqual([...first.elsewhereSince], [["b", 1000], ["c", 1000]])
    // the delay passes: b and c stop; one not listed any more stops at once
    assert.deepStrictEqual([...FleetPlan.wanted({ ...base, now: 11_000, elsewhereSince: first.elsewhereSince }).mine], ["a"])
    assert.deepStrictEqual([...FleetPlan.wanted({ ...base, now: 2000, listed: new Set(["a", "b"]), elsewhereSince: first.elsewhereSince }).mine].sort(), ["a", "b"])
    // missing from membership: everything running is kept, and the delay is not counted
    const missing = FleetPlan.wanted({ ...base, placedHere: new Set(), present: false, now: 60_000, elsewhereSince: first.elsewhereSince })
    assert.deepStrictEqual([...missing.mine].sort(), ["a", "b", "c"])
    assert.strictEqual(missing.elsewhereSince.size, 0)
    // membership lost: nothing is kept
    assert.deepStrictEqual([...FleetPlan.wanted({ ...base, placedHere: new Set(), present: false, lost: true }).mine], [])
  })
})
