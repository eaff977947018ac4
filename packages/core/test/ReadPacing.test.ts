import { describe, expect, it } from "vitest"
import * as ReadPacing from "../src/replication/ReadPacing.ts"

const options = { burst: 4, windowMs: 100, pauseMs: 2 }
const feed = (times: ReadonlyArray<number>) => {
  let state = ReadPacing.initial
  const pauses: Array<number> = []
  for (const t of times) {
    const next = ReadPacing.onMessage(state, t, options)
    state = next.state
    pauses.push(next.pauseMs)
  }
  return pauses
}

describe("ReadPacing", () => {
  it("pauses after a burst that arrived within the window, then counts afresh", () => {
    expect(feed([0, 1, 2, 3, 4, 5, 6, 7])).toEqual([0, 0, 0, 2, 0, 0, 0, 2])
  })

  it("never pauses a stream slower than burst per window", () => {
    expect(feed([0, 40, 80, 120, 160, 200, 240, 280, 320])).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0])
  })

  it("a burst that spans a quiet gap is not paced; the fast one after it is", () => {
    expect(feed([0, 500, 1000, 1001, 1002, 1003, 1004, 1005])).toEqual([0, 0, 0, 0, 0, 0, 0, 2])
  })

  it("adds at most pauseMs per burst messages (the defaults: 1 µs per message on average)", () => {
    const n = 100_000
    const total = feed(Array.from({ length: n }, (_, i) => i * 0.001)).reduce((a, b) => a + b, 0)
    expect(total).toBe((n / options.burst) * options.pauseMs)
    expect(ReadPacing.defaults.pauseMs / ReadPacing.defaults.burst).toBeLessThanOrEqual(0.001)
  })
})
