/**
 * The spool on the local disk: what a killed process left behind is removed by the next one, and a full disk is an
 * error that names the file (a real file system; `/dev/full` answers every write with ENOSPC).
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Processes from "../src/Processes.ts"
import * as Spool from "../src/replication/Spool.ts"

const temp = () => mkdtempSync(join(tmpdir(), "slotkeeper-spool-test-"))

describe("Spool (local disk)", () => {
  it("a spool folder whose process is gone (killed, no close) is removed by the next spool; a live process's is kept", () => {
    const base = temp()
    try {
      // a process that spooled and was killed: it exists no more
      const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" })
      const deadPid = Number(dead.stdout)
      const left = join(base, "slotkeeper-spool-left")
      mkdirSync(left)
      writeFileSync(join(left, "owner.json"), JSON.stringify({ pid: deadPid, started: "1" }))
      writeFileSync(join(left, "42.spool"), "x".repeat(1000))
      // this process's own, as another of its spools would be
      const live = join(base, "slotkeeper-spool-live")
      mkdirSync(live)
      writeFileSync(join(live, "owner.json"), JSON.stringify({ pid: process.pid, started: Processes.processStart(process.pid) }))
      assert.deepStrictEqual(Spool.removeStale(base), [left])
      assert.isFalse(existsSync(left))
      assert.isTrue(existsSync(live))
      // a spool names its owner
      const spool = new Spool.Spool(64, base)
      const mine = readdirSync(base).filter((n) => n.startsWith("slotkeeper-spool-") && n !== "slotkeeper-spool-live")
      assert.strictEqual(mine.length, 1)
      spool.close()
      assert.isFalse(existsSync(join(base, mine[0]!)))
    } finally {
      rmSync(base, { recursive: true, force: true })
    }
  })

  it("a full disk is a SpoolError that names the file and says what to do", () => {
    const base = temp()
    try {
      const spool = new Spool.Spool(64, base)
      const dir = readdirSync(base).find((n) => n.startsWith("slotkeeper-spool-"))!
      symlinkSync("/dev/full", join(base, dir, "7.spool")) // writes there fail with ENOSPC
      const thrown = (() => {
        try {
          for (let i = 0; i < 10; i++) spool.append(7, 7, 0, "x".repeat(100))
          return undefined
        } catch (e) {
          return e
        }
      })()
      assert.instanceOf(thrown, Spool.SpoolError)
      assert.match((thrown as Error).message, new RegExp(`spool file ${join(base, dir, "7.spool")}: ENOSPC.*free space there, or point TMPDIR at a larger disk`))
      spool.close()
    } finally {
      rmSync(base, { recursive: true, force: true })
    }
  })
})
