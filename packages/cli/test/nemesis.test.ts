/**
 * The nemesis, seeded and short, as part of the suite: ten random faults (the seeded sequence, whatever the
 * machine's speed; about a minute) (kills, pauses past the release bound,
 * partitions, server restarts and crashes, failovers) against six `slotkeeper run` processes in both lock modes, judged
 * by a fencing receiver against the surviving primary. The 10-minute run's table is in docs/reliability.md
 * (`npm run nemesis -- --seconds 600`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Nemesis from "../../../scripts/nemesis/engine.ts"

describe("nemesis (seeded, ten faults; real PostgreSQL 18 with a standby, six CLI processes)", () => {
  it.live("nothing lost, no phantom, no duplicate beyond the durable position, no stale batch accepted, in both lock modes", () =>
    Effect.gen(function*() {
      const report = yield* Nemesis.run({ seconds: 60, faults: 10, seed: 20261203, log: (line) => console.log(line) })
      console.log(Nemesis.table(report))
      for (const s of report.streams) {
        assert.deepStrictEqual(
          { mode: s.mode, lost: s.lost, phantoms: s.phantoms, duplicates: s.duplicatesBeyondDurable, stale: s.staleAccepted, late: s.lateAccepted, exits: s.exitLines },
          { mode: s.mode, lost: 0, phantoms: 0, duplicates: 0, stale: 0, late: 0, exits: [] }
        )
        assert.isAbove(s.committed, 500)
      }
      assert.isTrue(report.settled)
      assert.strictEqual(Object.values(report.faults).reduce((a, b) => a + b, 0), 10)
    }), { timeout: 300_000 })
})
