import { afterEach, assert, describe, it } from "@effect/vitest"
import * as PgVersions from "../src/PgVersions.ts"

describe("PgVersions", () => {
  const saved = process.env.SLOTKEEPER_PG_VERSIONS
  afterEach(() => {
    if (saved === undefined) delete process.env.SLOTKEEPER_PG_VERSIONS
    else process.env.SLOTKEEPER_PG_VERSIONS = saved
  })

  it("defaults to 18", () => {
    delete process.env.SLOTKEEPER_PG_VERSIONS
    assert.deepStrictEqual(PgVersions.matrix(), [18])
    assert.strictEqual(PgVersions.defaultMajor(), 18)
  })

  it("reads a comma-separated list from SLOTKEEPER_PG_VERSIONS", () => {
    process.env.SLOTKEEPER_PG_VERSIONS = " 15, 17 ,18"
    assert.deepStrictEqual(PgVersions.matrix(), [15, 17, 18])
    assert.strictEqual(PgVersions.defaultMajor(), 15)
  })

  it("rejects a major the kit does not support, saying which are", () => {
    process.env.SLOTKEEPER_PG_VERSIONS = "18,12"
    assert.throws(() => PgVersions.matrix(), /names 12; supported majors are 14, 15, 16, 17, 18/)
  })
})
