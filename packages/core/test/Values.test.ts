import { assert, describe, it } from "@effect/vitest"
import { isoTime } from "../src/replication/Pgoutput.ts"
import { Spool } from "../src/replication/Spool.ts"
import type { Relation } from "../src/replication/Pgoutput.ts"
import { Rows } from "../src/replication/Rows.ts"
import * as Values from "../src/replication/Values.ts"

describe("Values (pure)", () => {
  it("timestamps and dates become ISO 8601: microseconds and offsets kept, BC as astronomical years, expanded years signed", () => {
    assert.strictEqual(Values.timestamptz("2026-11-21 07:05:00.123456+00"), "2026-11-21T07:05:00.123456+00:00")
    assert.strictEqual(Values.timestamptz("2026-11-21 07:05:00-08"), "2026-11-21T07:05:00-08:00")
    assert.strictEqual(Values.timestamptz("1900-01-01 00:00:00+05:53:28"), "1900-01-01T00:00:00+05:53:28")
    assert.strictEqual(Values.timestamptz("infinity"), "infinity")
    assert.strictEqual(Values.timestamptz("0044-03-15 12:00:00+00 BC"), "-0043-03-15T12:00:00+00:00")
    assert.strictEqual(Values.timestamptz("10000-01-01 00:00:00+00"), "+10000-01-01T00:00:00+00:00")
    assert.strictEqual(Values.timestamp("2026-11-21 07:05:00"), "2026-11-21T07:05:00")
    assert.strictEqual(Values.timestamp("0044-03-15 12:00:00 BC"), "-0043-03-15T12:00:00")
    assert.strictEqual(Values.timestamp("0001-01-01 00:00:00 BC"), "0000-01-01T00:00:00")
    assert.strictEqual(Values.timestamp("-infinity"), "-infinity")
    assert.strictEqual(Values.date("4713-11-24 BC"), "-4712-11-24")
    assert.strictEqual(Values.date("5874897-12-31"), "+5874897-12-31")
    assert.strictEqual(Values.date("2026-01-02"), "2026-01-02")
    assert.strictEqual(isoTime(0n), "2000-01-01T00:00:00.000000Z")
    assert.strictEqual(isoTime(1_500_001n), "2000-01-01T00:00:01.500001Z")
    // the cached second: the same second twice, the next one, then back; before 1970 (negative Unix time)
    assert.deepStrictEqual([1_000_000n, 1_999_999n, 2_000_000n, 1_000_001n].map(isoTime), [
      "2000-01-01T00:00:01.000000Z", "2000-01-01T00:00:01.999999Z", "2000-01-01T00:00:02.000000Z", "2000-01-01T00:00:01.000001Z"
    ])
    assert.strictEqual(isoTime(-946_684_800_000_001n), "1969-12-31T23:59:59.999999Z")
    assert.strictEqual(isoTime(-946_684_800_000_000n), "1970-01-01T00:00:00.000000Z")
  })
  it("arrays: nesting, quoting, NULL, lower bounds kept, element types, other delimiters", () => {
    assert.deepStrictEqual(Values.fromText(1007, "{1,NULL,-3}"), [1, null, -3])
    assert.deepStrictEqual(Values.fromText(1009, "{\"a,b\",\"q\\\"uote\",NULL,\"NULL\",\"\"}"), ["a,b", "q\"uote", null, "NULL", ""])
    assert.deepStrictEqual(Values.fromText(1231, "{{1.5,2},{3,4}}"), [["1.5", "2"], ["3", "4"]])
    assert.deepStrictEqual(Values.fromText(1007, "[0:1]={7,8}"), { lower_bounds: [0], values: [7, 8] })
    assert.deepStrictEqual(Values.fromText(1007, "[-1:0][1:2]={{1,2},{3,4}}"), { lower_bounds: [-1, 1], values: [[1, 2], [3, 4]] })
    assert.deepStrictEqual(Values.fromText(1000, "{t,f}"), [true, false])
    assert.deepStrictEqual(Values.fromText(1016, "{}"), [])
    assert.strictEqual(String(Values.fromText(1022, "{-0,NaN,-Infinity}")), String([-0, Number.NaN, Number.NEGATIVE_INFINITY]))
    assert.isTrue(Object.is((Values.fromText(1022, "{-0}") as Array<number>)[0], -0))
    // jsonb elements are PostgreSQL's text, not parsed
    assert.deepStrictEqual(Values.fromText(3807, "{\"{\\\"a\\\": 1}\",null}"), ["{\"a\": 1}", "null"])
    assert.deepStrictEqual(Values.fromText(1020, "{(1,1),(0,0);(2,2),(1,1)}"), ["(1,1),(0,0)", "(2,2),(1,1)"])
    assert.deepStrictEqual(Values.fromText(1182, "{\"0044-03-15 BC\",2026-01-02}"), ["-0043-03-15", "2026-01-02"])
  })
  it("numbers: exact where JavaScript would round; json never parsed; other types as text", () => {
    assert.strictEqual(Values.fromText(20, "-9223372036854775808"), "-9223372036854775808")
    assert.strictEqual(Values.fromText(1700, "0.1000000000000000000001"), "0.1000000000000000000001")
    assert.deepStrictEqual([Values.fromText(701, "Infinity"), Values.fromText(701, "-Infinity")], [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
    assert.isNaN(Values.fromText(700, "NaN") as number)
    assert.isTrue(Object.is(Values.fromText(701, "-0"), -0))
    assert.strictEqual(Values.fromText(114, "{\"a\":1,\"a\":2}"), "{\"a\":1,\"a\":2}")
    assert.strictEqual(Values.fromText(3802, "null"), "null")
    assert.strictEqual(Values.fromText(99999, "some user type"), "some user type")
  })
  it("JSON: floats exact (-0, NaN, Infinity), bounded arrays, rows in the table's order with any column name", () => {
    assert.strictEqual(Values.valueJson(-0), "-0")
    assert.strictEqual(Values.valueJson([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0.1, -0]), "[\"NaN\",\"Infinity\",\"-Infinity\",0.1,-0]")
    assert.strictEqual(Values.valueJson({ lower_bounds: [0], values: [1, -0] }), "{\"lower_bounds\":[0],\"values\":[1,-0]}")
    assert.strictEqual(JSON.parse(Values.valueJson(1.7976931348623157e308)), 1.7976931348623157e308)
    const row: Values.Row = Object.create(null)
    row.b = 1
    row["__proto__"] = "kept"
    row["1"] = "one"
    assert.strictEqual(Values.rowJson(row, ["b", "__proto__", "1", "absent"]), "{\"b\":1,\"__proto__\":\"kept\",\"1\":\"one\"}")
    assert.isFalse(Values.plainName("__proto__"))
    assert.isFalse(Values.plainName("1"))
    assert.isTrue(Values.plainName("01"))
  })
})

describe("Rows (pure)", () => {
  const relation = (names: ReadonlyArray<[string, number, boolean]>): Relation => ({
    oid: 1, schema: "public", name: "t", replicaIdentity: "default", columns: names.map(([name, typeOid, key]) => ({ name, typeOid, typeMod: -1, key }))
  })
  it("maps by type, keeps only the key of a key tuple, lists unchanged TOAST, keeps __proto__ and index-like names", () => {
    const rows = new Rows()
    const r = relation([["id", 23, true], ["__proto__", 25, false], ["1", 701, false], ["big", 25, false]])
    const built = rows.build(r, ["7", "p", "-0", undefined])
    assert.deepStrictEqual(Object.keys(built.row).sort(), ["1", "__proto__", "id"])
    assert.strictEqual(built.row["__proto__"], "p")
    assert.isTrue(Object.is(built.row["1"], -0))
    assert.deepStrictEqual(built.unchanged, ["big"])
    assert.deepStrictEqual({ ...rows.build(r, ["7", null, null, null], true).row }, { id: 7 })
    const shape = rows.shape(r)
    assert.deepStrictEqual([shape.columns, shape.plain, shape.floats], [["id", "__proto__", "1", "big"], false, true])
    assert.strictEqual(Values.rowJson(built.row, shape.columns), "{\"id\":7,\"__proto__\":\"p\",\"1\":-0}")
  })
})

describe("Spool (local disk)", () => {
  it("replays tags and bytes in order across flushes and oversized records, drops an aborted subtransaction's records, and removes its files", () => {
    const spool = new Spool(64) // tiny buffer: many flushes, and records larger than it
    const body = (i: number) => Buffer.from(`${i}:${"x".repeat(i)}`)
    for (let i = 0; i < 100; i++) spool.append(7, i >= 40 && i < 60 ? 8 : 7, i, i % 2 === 0 ? body(i) : body(i).toString())
    spool.abort(7, 8)
    // a body is a view valid until the next record: copied here to be kept
    const replayed = Array.from(spool.replay(7), (r) => [r.tag, Buffer.from(r.body).toString()])
    const kept = [...Array.from({ length: 40 }, (_, i) => i), ...Array.from({ length: 40 }, (_, i) => i + 60)]
    assert.deepStrictEqual(replayed, kept.map((i) => [i, body(i).toString()]))
    assert.isFalse(spool.has(7))
    // bodies come back exactly as written, whatever bytes they hold: the spool adds no markers to them
    const bodies = [Buffer.alloc(0), Buffer.from([0, 0, 0, 12, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff]), Buffer.from("\u0000{\"$f\":\"NaN\"}"), Buffer.alloc(200, 0xfe)]
    for (const b of bodies) spool.append(8, 8, 0xffffffff, b)
    assert.deepStrictEqual(Array.from(spool.replay(8), (r) => [r.tag, Buffer.from(r.body)]), bodies.map((b) => [0xffffffff, b]))
    spool.append(9, 9, 1, "x")
    spool.abort(9, 9)
    assert.deepStrictEqual([...spool.replay(9)], [])
    spool.close()
  })
})
