/** `slotkeeper fleet --config` (pure): the file checked whole, each stream as `run` checks its options. */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as FleetConfig from "../src/config/FleetConfig.ts"

const stream = (id: string, more: Record<string, unknown> = {}) => ({ id, databaseUrl: `postgres://u@db/${id}`, tables: ["public.orders"], sink: `file:/data/${id}.ndjson`, ...more })
const parse = (value: unknown) => FleetConfig.fromFile("fleet.json", JSON.stringify(value), "runner-1")
const refused = (value: unknown) => {
  const r = parse(value)
  if (Result.isSuccess(r)) throw new Error(`accepted: ${JSON.stringify(value)}`)
  return r.failure.message
}

describe("FleetConfig (pure)", () => {
  it("streams with run's options, defaults under each, the runner's instance id", () => {
    const r = Result.getOrThrow(parse({
      control: { databaseUrl: "postgres://u@control/fleet" },
      defaults: { lock: "lease", snapshot: "initial" },
      streams: [stream("tenant_a"), stream("tenant_b", { lock: "advisory", chunkSize: 500, tables: ["public.orders", { table: "public.items", where: "id > 0" }] })]
    }))
    assert.strictEqual(r.controlUrl, "postgres://u@control/fleet")
    assert.deepStrictEqual([r.shardLockRefreshMs, r.shardLockExpirationMs], [1000, 3000])
    const tuned = Result.getOrThrow(parse({ control: { databaseUrl: "postgres://x" }, cluster: { shardLockRefreshInterval: "2s", shardLockExpiration: 9000 }, streams: [stream("a")] }))
    assert.deepStrictEqual([tuned.shardLockRefreshMs, tuned.shardLockExpirationMs], [2000, 9000])
    // the sessions the streams of one database share: 4 unless given
    assert.deepStrictEqual([r.poolSize, Result.getOrThrow(parse({ control: { databaseUrl: "postgres://x" }, poolSize: 20, streams: [stream("a")] })).poolSize], [4, 20])
    assert.deepStrictEqual(r.streams.map((s) => [s.streamId, s.instanceId, s.lock, s.snapshot, s.chunkSize]), [
      ["tenant_a", "runner-1", "lease", "initial", 10_000],
      ["tenant_b", "runner-1", "advisory", "initial", 500]
    ])
    assert.deepStrictEqual(r.streams[1]!.tables, [{ schema: "public", name: "orders" }, { schema: "public", name: "items", where: "id > 0" }])
    assert.deepStrictEqual(r.streams[0]!.sink, { _tag: "File", path: "/data/tenant_a.ndjson" })
  })

  it("an advisory stream without timing gets the fleet's (8 s loss deadline, 10 s release bound); given timing, and lease streams, are left alone", () => {
    const r = Result.getOrThrow(parse({
      control: { databaseUrl: "postgres://x" },
      streams: [stream("plain"), stream("own", { lossDeadline: "1500ms" }), stream("lease", { lock: "lease" })]
    }))
    const [plain, own, lease] = r.streams
    assert.deepStrictEqual([plain!.ownership.lossDeadline, plain!.ownership.serverReleaseBound], [8000, 10000])
    assert.strictEqual(own!.ownership.lossDeadline, 1500)
    assert.isUndefined(own!.ownership.serverReleaseBound)
    assert.isUndefined(lease!.ownership.lossDeadline)
  })

  it("refuses, saying where and what to change", () => {
    const control = { databaseUrl: "postgres://u@control/fleet" }
    const cases: ReadonlyArray<readonly [unknown, RegExp]> = [
      [[], /must be a JSON object/],
      [{ streams: [stream("a")] }, /"control" must be \{"databaseUrl": "postgres:\/\/\.\.\."\}/],
      [{ control: { databaseUrl: "x", pool: 3 }, streams: [stream("a")] }, /control: unknown key "pool"/],
      [{ control, streams: [] }, /"streams" must be a list of at least one stream/],
      [{ control, streams: [stream("a")], extra: 1 }, /unknown key "extra"; the keys are control, cluster, defaults, streams, poolSize/],
      [{ control, poolSize: 0, streams: [stream("a")] }, /poolSize: 0 is not a number of sessions: give an integer 1\.\.100/],
      [{ control, poolSize: "8", streams: [stream("a")] }, /poolSize: "8" is not a number of sessions/],
      [{ control, poolSize: 2.5, streams: [stream("a")] }, /poolSize: 2\.5 is not/],
      [{ control, cluster: { shardLockExpiration: "2s" }, streams: [stream("a")] }, /shardLockExpiration \(2000 ms\) must be at least three shardLockRefreshInterval \(1000 ms\)/],
      [{ control, cluster: { shardLockRefreshInterval: "soon" }, streams: [stream("a")] }, /cluster: shardLockRefreshInterval: "soon" is not a positive duration/],
      [{ control, cluster: { lockTimeout: "1s" }, streams: [stream("a")] }, /cluster: unknown key "lockTimeout"/],
      [{ control, cluster: [], streams: [stream("a")] }, /"cluster" must be an object/],
      [{ control, defaults: { sink: "stdout" }, streams: [stream("a")] }, /defaults: "sink" cannot be a default: each stream names its own/],
      [{ control, defaults: { httpPort: 9000 }, streams: [stream("a")] }, /defaults: "httpPort" cannot be a default: it is the runner's/],
      [{ control, defaults: { lock: "mutex" }, streams: [stream("a")] }, /lock/],
      [{ control, streams: [{ databaseUrl: "postgres://x", tables: ["t"] }] }, /streams\[0\]: "id" must be the stream's id/],
      [{ control, streams: [stream("Bad-Id")] }, /streams\[0\] \(Bad-Id\): .*stream-id/],
      [{ control, streams: [stream("a", { streamId: "b" })] }, /streams\[0\] \(a\): "streamId" is the runner's, not a stream's: use "id"/],
      [{ control, streams: [stream("a", { httpPort: 9000 })] }, /"httpPort" is the runner's, not a stream's: give it to slotkeeper fleet/],
      [{ control, streams: [stream("a", { databaseUrl: undefined })] }, /streams\[0\] \(a\): "databaseUrl" is missing/],
      [{ control, streams: [stream("a", { tables: [] })] }, /"tables" is missing: name at least one table/],
      [{ control, streams: [stream("a", { sink: "ftp://x" })] }, /streams\[0\] \(a\): .*sink/],
      [{ control, streams: [stream("a", { slotMode: 3 })] }, /streams\[0\] \(a\): "slotMode" must be a string/],
      [{ control, streams: [stream("a", { tabels: ["x"] })] }, /unknown option "tabels"/],
      [{ control, streams: [stream("a"), stream("a", { sink: "stdout" })] }, /streams\[1\] \(a\): stream id a is given twice/],
      [{ control, streams: [stream("a"), stream("b", { sink: "file:/data/a.ndjson" })] }, /streams\[1\] \(b\): sink file \/data\/a\.ndjson is another stream's too/]
    ]
    for (const [value, expected] of cases) assert.match(refused(value), expected, JSON.stringify(value))
    assert.match(Result.isFailure(FleetConfig.fromFile("fleet.json", "{", "r")) ? "is not JSON" : "", /is not JSON/)
    // every message starts with where the file is
    assert.match(refused({ control, streams: [stream("a", { tables: [] })] }), /^--config: fleet\.json: streams\[0\] \(a\): /)
  })
})
