/** The progress line of a followed backfill (pure): rate over what was seen, percentage of the estimate, time left. */
import { assert, describe, it } from "@effect/vitest"
import * as BackfillFollow from "../src/commands/BackfillFollow.ts"

describe("BackfillFollow (pure)", () => {
  it("rate from the samples seen, not since the request; time left from the estimate", () => {
    const first = { at: 10_000, rows: 200_000, state: "running" }
    // one second later: 140,000 rows more
    const p = BackfillFollow.progress(first, { at: 11_000, rows: 340_000, state: "running" }, 5_000_000)
    assert.deepStrictEqual(p, { rows: 340_000, estimate: 5_000_000, rowsPerSecond: 140_000, secondsLeft: 34, percent: 6 })
    assert.strictEqual(BackfillFollow.line("public.items", "running", p), "public.items: 340,000 of about 5,000,000 rows (6%), 140,000 rows/s, about 34 s left")
    // minutes and hours
    const slow = BackfillFollow.progress(first, { at: 20_000, rows: 210_000, state: "running" }, 5_000_000)
    assert.strictEqual(BackfillFollow.line("public.items", "running", slow), "public.items: 210,000 of about 5,000,000 rows (4%), 1,000 rows/s, about 1 h 19 min left")
    assert.match(BackfillFollow.line("t", "running", BackfillFollow.progress(first, { at: 11_000, rows: 201_000, state: "running" }, 300_000)), /about 1 min 39 s left$/)
  })

  it("no rate before a second has passed or while nothing moved; no estimate, no percentage; past the estimate, no time left", () => {
    const first = { at: 0, rows: 0, state: "running" }
    assert.strictEqual(BackfillFollow.line("t", "running", BackfillFollow.progress(first, first, 1000)), "t: 0 of about 1,000 rows (0%)")
    assert.strictEqual(BackfillFollow.line("t", "running", BackfillFollow.progress(first, { at: 500, rows: 900, state: "running" }, null)), "t: 900 rows")
    assert.strictEqual(BackfillFollow.line("t", "running", BackfillFollow.progress(first, { at: 2000, rows: 0, state: "running" }, 1000)), "t: 0 of about 1,000 rows (0%)")
    // the estimate was low: 99% at most, no time left
    assert.strictEqual(BackfillFollow.line("t", "running", BackfillFollow.progress(first, { at: 2000, rows: 1500, state: "running" }, 1000)), "t: 1,500 of about 1,000 rows (99%), 750 rows/s")
    // an empty table's estimate (0, or -1 before any ANALYZE, given as null) is no estimate
    assert.strictEqual(BackfillFollow.line("t", "running", BackfillFollow.progress(first, first, 0)), "t: 0 rows")
  })

  it("the end: done is 100%, whatever the estimate; cancelled is said", () => {
    const first = { at: 0, rows: 0, state: "running" }
    assert.strictEqual(BackfillFollow.line("t", "done", BackfillFollow.progress(first, { at: 3000, rows: 2900, state: "done" }, 3000)), "t: done, 2,900 of about 3,000 rows (100%), 967 rows/s")
    assert.strictEqual(BackfillFollow.line("t", "cancelled", BackfillFollow.progress(first, { at: 3000, rows: 10, state: "cancelled" }, 3000)), "t: cancelled, 10 of about 3,000 rows (0%), 3 rows/s")
  })
})
