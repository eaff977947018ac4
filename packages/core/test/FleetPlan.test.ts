/** FleetPlan (pure): what a change of the fleet's list registers and unregisters. */
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
})
