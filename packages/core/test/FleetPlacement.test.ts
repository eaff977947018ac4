/**
 * FleetPlacement (pure): balanced to ±1 whatever the names, the same answer from any order of the same input, and a
 * runner joining or leaving moves few streams beyond those that must move.
 */
import { describe, expect, it } from "vitest"
import * as FleetPlacement from "../src/fleet/FleetPlacement.ts"

/** A deterministic pseudo-random generator (mulberry32), so the name sets are the same on every run. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const names = (next: () => number, prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}-${Math.floor(next() * 1e9).toString(36)}`)
const loads = (placement: ReadonlyMap<string, string>, runners: ReadonlyArray<string>) => runners.map((r) => FleetPlacement.on(placement, r).length)
const sizes: ReadonlyArray<readonly [streams: number, runners: number]> = [[0, 1], [1, 3], [4, 2], [7, 3], [8, 2], [30, 3], [90, 3], [100, 4], [300, 10]]

describe("FleetPlacement", () => {
  it("every stream placed on a live runner, every runner carrying floor(m/n) or ceil(m/n) (200 random name sets per size)", () => {
    const next = random(1)
    for (const [m, n] of sizes) {
      for (let t = 0; t < 200; t++) {
        const streams = names(next, "tenant", m)
        const runners = names(next, "10.0.0.1:34431", n)
        const placed = FleetPlacement.assign(streams, runners)
        expect(placed.size).toBe(m)
        for (const s of streams) expect(runners).toContain(placed.get(s))
        const l = loads(placed, runners)
        expect(Math.max(...l) - Math.min(...l), `${m} over ${n}: ${l.join("/")}`).toBeLessThanOrEqual(1)
        expect(l.reduce((a, b) => a + b, 0)).toBe(m)
      }
    }
  })

  it("the same answer on every runner: independent of the order and duplicates of its input", () => {
    const next = random(2)
    const streams = names(next, "s", 40)
    const runners = names(next, "r", 5)
    const a = FleetPlacement.assign(streams, runners)
    const b = FleetPlacement.assign([...streams].reverse().concat(streams.slice(0, 3)), [...runners].reverse())
    expect([...b].sort()).toEqual([...a].sort())
  })

  it("no runner: nothing placed", () => {
    expect(FleetPlacement.assign(["a", "b"], []).size).toBe(0)
  })

  it("a runner joining moves at most 2.5× the fewest possible (+3); one leaving moves its own streams and at most 0.7× as many others (+2) (200 name sets per size)", () => {
    const next = random(3)
    for (const [m, n] of sizes.filter(([m]) => m >= 4)) {
      for (let t = 0; t < 200; t++) {
        const streams = names(next, "tenant", m)
        const runners = names(next, "10.0.0.1:34431", n)
        const before = FleetPlacement.assign(streams, runners)
        // joining: the fewest moves give the new runner floor(m / (n + 1)) streams
        const joined = FleetPlacement.assign(streams, [...runners, "joined:1"])
        const movedIn = streams.filter((s) => before.get(s) !== joined.get(s)).length
        expect(movedIn, `${m} over ${n} + 1`).toBeLessThanOrEqual(Math.ceil(2.5 * Math.floor(m / (n + 1))) + 3)
        // leaving: the leaver's streams must move; others moving is the price of balance
        const left = FleetPlacement.assign(streams, runners.slice(1))
        const must = FleetPlacement.on(before, runners[0]!).length
        const others = streams.filter((s) => before.get(s) !== runners[0] && before.get(s) !== left.get(s)).length
        expect(others, `${m} over ${n} - 1`).toBeLessThanOrEqual(Math.ceil(0.7 * must) + 2)
      }
    }
  })
})
