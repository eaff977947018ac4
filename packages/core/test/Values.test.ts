import { assert, describe, it } from "@effect/vitest"
import { isoTime } from "../src/replication/Pgoutput.ts"
import { Spool } from "../src/replication/Spool.ts"
import * as Values from "../src/replication/Values.ts"

describe("Values (pure)", () => {
  it("timestamps become ISO 8601, microseconds and offsets kept", () => {
    assert.strictEqual(Values.timestamptz("2026-11-21 07:05:00.123456+00"), "2026-11-21T07:05:00.123456+00:00")
    assert.strictEqual(Values.timestamptz("2026-11-21 07:05:00-08"), "2026-11-21T07:05:00-08:00")
    assert.strictEqual(Values.timestamptz("1900-01-01 00:00:00+05:53:28"), "1900-01-01T00:00:00+05:53:28")
    assert.strictEqual(Values.timestamptz("infinity"), "infinity")
    assert.strictEqual(Values.timestamp("2026-11-21 07:05:00"), "2026-11-21T07:05:00")
    assert.strictEqual(Values.timestamp("0044-03-15 12:00:00 BC"), "-0044-03-15T12:00:00")
    assert.strictEqual(isoTime(0n), "2000-01-01T00:00:00.000000Z")
    assert.strictEqual(isoTime(1_500_001n), "2000-01-01T00:00:01.500001Z")
    // the cached second: the same second twice, the next one, then back; before 1970 (negative Unix time)
    assert.deepStrictEqual([1_000_000n, 1_999_999n, 2_000_000n, 1_000_001n].map(isoTime), [
      "2000-01-01T00:00:01.000000Z", "2000-01-01T00:00:01.999999Z", "2000-01-01T00:00:02.000000Z", "2000-01-01T00:00:01.000001Z"
    ])
    assert.strictEqual(isoTime(-946_684_800_000_001n), "1969-12-31T23:59:59.999999Z")
    assert.strictEqual(isoTime(-946_684_800_000_000n), "1970-01-01T00:00:00.000000Z")
  })
  it("arrays: nesting, quoting, NULL, dimension prefixes, element types", () => {
    assert.deepStrictEqual(Values.fromText(1007, "{1,NULL,-3}"), [1, null, -3])
    assert.deepStrictEqual(Values.fromText(1009, "{\"a,b\",\"q\\\"uote\",NULL,\"NULL\",\"\"}"), ["a,b", "q\"uote", null, "NULL", ""])
    assert.deepStrictEqual(Values.fromText(1231, "{{1.5,2},{3,4}}"), [["1.5", "2"], ["3", "4"]])
    assert.deepStrictEqual(Values.fromText(1007, "[0:1]={7,8}"), [7, 8])
    assert.deepStrictEqual(Values.fromText(1000, "{t,f}"), [true, false])
    assert.deepStrictEqual(Values.fromText(1016, "{}"), [])
    assert.deepStrictEqual(Values.fromText(3807, "{\"{\\\"a\\\": 1}\"}"), [{ a: 1 }])
  })
  it("numbers: exact where JavaScript would round, special floats as numbers", () => {
    assert.strictEqual(Values.fromText(20, "-9223372036854775808"), "-9223372036854775808")
    assert.strictEqual(Values.fromText(1700, "0.1000000000000000000001"), "0.1000000000000000000001")
    assert.deepStrictEqual([Values.fromText(701, "Infinity"), Values.fromText(701, "-Infinity")], [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
    assert.isNaN(Values.fromText(700, "NaN") as number)
    assert.strictEqual(Values.fromText(99999, "some user type"), "some user type")
  })
})

describe("Spool (local disk)", () => {
  it("replays in order across flushes, drops an aborted subtransaction's changes, and removes its files", () => {
    const spool = new Spool(64) // tiny buffer: many flushes
    for (let i = 0; i < 100; i++) spool.append(7, i >= 40 && i < 60 ? 8 : 7, { i, text: "x".repeat(i) })
    spool.abort(7, 8)
    const replayed = [...spool.replay(7)].map((v) => (v as { i: number }).i)
    assert.deepStrictEqual(replayed, [...Array.from({ length: 40 }, (_, i) => i), ...Array.from({ length: 40 }, (_, i) => i + 60)])
    assert.isFalse(spool.has(7))
    spool.append(8, 8, { nan: Number.NaN, inf: Number.NEGATIVE_INFINITY, bytes: new Uint8Array([0, 255]), text: "{\"$f\": 1}" })
    assert.deepStrictEqual([...spool.replay(8)], [{ nan: Number.NaN, inf: Number.NEGATIVE_INFINITY, bytes: new Uint8Array([0, 255]), text: "{\"$f\": 1}" }])
    spool.append(9, 9, { i: 1 })
    spool.abort(9, 9)
    assert.deepStrictEqual([...spool.replay(9)], [])
    spool.close()
  })
})
