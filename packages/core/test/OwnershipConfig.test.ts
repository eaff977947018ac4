import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as OwnershipConfig from "../src/ownership/OwnershipConfig.ts"

const base = { streamId: "orders", instanceId: "pod-1" }
const error = (r: ReturnType<typeof OwnershipConfig.make>) => (Result.isFailure(r) ? r.failure : undefined)
const valid = (o: OwnershipConfig.OwnershipOptions) => Result.getOrThrow(OwnershipConfig.make(o))

describe("OwnershipConfig (pure)", () => {
  it("defaults: advisory, heartbeat 500 ms, deadline 2 s, server bound 4 s; lease 4 s renewed every 1 s", () => {
    const c = valid(base)
    assert.deepInclude(c, { mode: "advisory", checkIntervalMs: 500, lossDeadlineMs: 2_000, serverReleaseBoundMs: 4_000, onLoss: "wait", rejoinDelayMs: 1_000, schema: "slotkeeper" })
    assert.deepInclude(valid({ ...base, mode: "lease" }), { mode: "lease", checkIntervalMs: 1_000, lossDeadlineMs: 2_000, serverReleaseBoundMs: 4_000, leaseDurationMs: 4_000 })
  })

  it("refuses a detection deadline that is not shorter than the server's release bound by the margin", () => {
    const e = error(OwnershipConfig.make({ ...base, lossDeadline: "9 seconds", serverReleaseBound: "10 seconds" }))
    assert.strictEqual(e?._tag, "OwnershipConfigError")
    assert.match(e!.message, /must not exceed the server's release bound.*Raise serverReleaseBound or lower lossDeadline/)
  })

  it("refuses a deadline shorter than two heartbeats", () => {
    const e = error(OwnershipConfig.make({ ...base, heartbeatInterval: "3 seconds" }))
    assert.match(e!.message, /at least twice heartbeatInterval/)
  })

  it("lease: renewInterval must be less than half the lease", () => {
    for (const renewInterval of ["5 seconds", "6 seconds"] as const) {
      const e = error(OwnershipConfig.make({ ...base, mode: "lease", leaseDuration: "10 seconds", renewInterval }))
      assert.strictEqual(e?._tag, "OwnershipConfigError")
      assert.match(e!.message, /renewInterval .* must be less than half of leaseDuration/)
    }
    const ok = valid({ ...base, mode: "lease", leaseDuration: "10 seconds", renewInterval: "3 seconds" })
    assert.deepInclude(ok, { mode: "lease", checkIntervalMs: 3_000, lossDeadlineMs: 8_000, serverReleaseBoundMs: 10_000 })
  })

  it("bad stream id, instance id, mode, duration and schema are typed errors that say what to change", () => {
    assert.strictEqual(error(OwnershipConfig.make({ ...base, streamId: "Orders!" }))?._tag, "InvalidStreamId")
    assert.strictEqual(error(OwnershipConfig.make({ ...base, instanceId: "a b" }))?._tag, "InvalidInstanceId")
    assert.match(error(OwnershipConfig.make({ ...base, mode: "redis" as never }))!.message, /use "advisory" or "lease"/)
    assert.match(error(OwnershipConfig.make({ ...base, heartbeatInterval: "soon" as never }))!.message, /is not a duration/)
    assert.match(error(OwnershipConfig.make({ ...base, heartbeatInterval: 0 }))!.message, /positive, finite/)
    assert.match(error(OwnershipConfig.make({ ...base, schema: "x; drop" }))!.message, /lowercase identifier/)
  })

  it("the breaker only considers holders silent for longer than the server bound", () => {
    const e = error(OwnershipConfig.make({ ...base, breaker: { staleAfter: "3 seconds", gracePeriod: "30 seconds" } }))
    assert.match(e!.message, /breaker.staleAfter .* must exceed serverReleaseBound/)
    assert.deepInclude(valid({ ...base, breaker: { staleAfter: "30 seconds", gracePeriod: "60 seconds" } }), {
      breaker: { staleAfterMs: 30_000, gracePeriodMs: 60_000 }
    })
  })
})
