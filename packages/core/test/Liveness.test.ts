import { assert, describe, it } from "@effect/vitest"
import * as Liveness from "../src/ownership/Liveness.ts"

const confirmed = { _tag: "Confirmed" } as const
const miss = (detail = "timeout") => ({ _tag: "Miss", detail }) as const

describe("Liveness (pure)", () => {
  it("held until exactly confirmedAt + deadline, lost at that instant", () => {
    const s = Liveness.initial(1_000, 5_000)
    assert.strictEqual(Liveness.at(s, 5_999)._tag, "Held")
    const v = Liveness.at(s, 6_000)
    assert.strictEqual(v._tag, "Lost")
    assert.deepStrictEqual(v._tag === "Lost" && v.reason, { _tag: "DeadlinePassed", confirmedAt: 1_000, deadlineAt: 6_000, lastMiss: undefined })
  })

  it("a confirmation extends the deadline from the start of its check, not its end", () => {
    const s = Liveness.initial(0, 5_000)
    const v = Liveness.onCheck(s, 2_000, confirmed, 2_900)
    assert.strictEqual(v._tag, "Held")
    assert.strictEqual(v._tag === "Held" && v.lostAt, 7_000)
  })

  it("misses change nothing but the last failure; the deadline decides", () => {
    let s = Liveness.initial(0, 3_000)
    for (const t of [1_000, 2_000]) {
      const v = Liveness.onCheck(s, t - 100, miss(`timeout at ${t}`), t)
      assert.strictEqual(v._tag, "Held")
      if (v._tag === "Held") s = v.state
    }
    const v = Liveness.onCheck(s, 2_900, miss("timeout at 3000"), 3_000)
    assert.deepStrictEqual(v._tag === "Lost" && v.reason, { _tag: "DeadlinePassed", confirmedAt: 0, deadlineAt: 3_000, lastMiss: "timeout at 3000" })
  })

  it("NotHeld and SessionGone are losses at once", () => {
    const s = Liveness.initial(0, 60_000)
    assert.deepStrictEqual(Liveness.onCheck(s, 10, { _tag: "NotHeld", detail: "granted to pid 42" }, 20), { _tag: "Lost", reason: { _tag: "NotHeld", detail: "granted to pid 42" } })
    assert.deepStrictEqual(Liveness.onCheck(s, 10, { _tag: "SessionGone", detail: "connection closed" }, 20)._tag, "Lost")
  })

  it("a confirmation that arrives after the deadline does not revive ownership", () => {
    const s = Liveness.initial(0, 1_000)
    assert.strictEqual(Liveness.onCheck(s, 900, confirmed, 1_000)._tag, "Lost")
  })

  it("an older check finishing late cannot move the deadline back or forward", () => {
    const v1 = Liveness.onCheck(Liveness.initial(0, 5_000), 3_000, confirmed, 3_100)
    assert.strictEqual(v1._tag, "Held")
    const v2 = Liveness.onCheck((v1 as { state: Liveness.State }).state, 1_000, confirmed, 3_200)
    assert.strictEqual(v2._tag === "Held" && v2.lostAt, 8_000)
  })
})
