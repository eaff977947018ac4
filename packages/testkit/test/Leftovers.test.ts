import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, readdirSync, rmdirSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { isAlive } from "@slotkeeper/embedded/internal"
import { pollUntil } from "@slotkeeper/embedded/internal"
import * as Leftovers from "../src/Leftovers.ts"
import { ServerUser } from "@slotkeeper/embedded"

const fixture = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "start-cluster.ts")

interface FixtureReport {
  readonly kind: string
  readonly uid: number
  readonly serverUid: number
  readonly postmasterPid: number
  readonly dataDir: string
  readonly answered: boolean
}

/** Runs the fixture in a child Node process (as `identity` if given) and returns it with its first report line. */
const runFixture = (mode: "hang" | "once", identity: { uid?: number; gid?: number } = {}) =>
  Effect.acquireRelease(
    Effect.callback<{ child: ChildProcess; report: FixtureReport }, Error>((resume) => {
      const child = spawn(process.execPath, [fixture, mode], { stdio: ["ignore", "pipe", "pipe"], ...identity })
      let out = ""
      let err = ""
      child.stderr!.on("data", (d: Buffer) => { err += d.toString() })
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString()
        const line = out.split("\n").find((l) => l.startsWith("{"))
        if (line !== undefined) resume(Effect.succeed({ child, report: JSON.parse(line) as FixtureReport }))
      })
      child.on("exit", (code) => resume(Effect.fail(new Error(`fixture exited with ${code} before reporting:\n${err}`))))
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

const exitOf = (child: ChildProcess) =>
  Effect.callback<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

describe("Leftovers", () => {
  it.live("reapOrphans stops the server of a killed test process and removes its folder", () =>
    Effect.gen(function*() {
      const { child, report } = yield* runFixture("hang")
      const serverDir = dirname(report.dataDir)
      child.kill("SIGKILL") // no finalizer can run: the server is orphaned
      yield* exitOf(child)
      assert.isTrue(isAlive(report.postmasterPid), "the orphaned server is still running")
      const reaped = yield* Effect.promise(() => Leftovers.reapOrphans())
      assert.include(reaped.map((r) => r.dir), serverDir)
      assert.isFalse(existsSync(serverDir))
      yield* pollUntil(Effect.sync(() => (isAlive(report.postmasterPid) ? undefined : true)), {
        timeoutMs: 10_000,
        onTimeout: () => new Error(`postmaster ${report.postmasterPid} survived the reaper`)
      })
    }))

  it.live("a process that ends normally leaves nothing behind", () =>
    Effect.gen(function*() {
      const { child, report } = yield* runFixture("once")
      assert.strictEqual(yield* exitOf(child), 0)
      assert.isTrue(report.answered)
      assert.isFalse(existsSync(dirname(report.dataDir)))
      assert.isFalse(isAlive(report.postmasterPid))
    }))
})

// As root (CI), the suite itself exercises the user switch; this runs the kit as an unprivileged user too, where no
// switch happens. It needs the checkout and this Node to be readable for that user.
const rootUser = process.getuid?.() === 0 ? Effect.runSync(Effect.result(ServerUser.resolve)) : undefined
const unprivileged = rootUser?._tag === "Success" ? rootUser.success : undefined
const reachable = unprivileged !== undefined &&
  spawnSync(process.execPath, ["-e", `require("fs").accessSync(${JSON.stringify(fixture)})`], { uid: unprivileged.uid, gid: unprivileged.gid }).status === 0

describe("ServerUser", () => {
  it.live.skipIf(!reachable)("run by an unprivileged user, the kit starts the server as that user, with no switch", () =>
    Effect.gen(function*() {
      const user = unprivileged!
      const { child, report } = yield* runFixture("once", { uid: user.uid, gid: user.gid })
      assert.strictEqual(yield* exitOf(child), 0)
      assert.deepInclude(report, { kind: "self", uid: user.uid, serverUid: user.uid, answered: true })
      assert.isFalse(existsSync(dirname(report.dataDir)))
      // the child made its own (now empty) run and root folders under its uid: leave nothing behind
      const runDir = dirname(dirname(report.dataDir))
      for (const dir of [runDir, dirname(runDir)]) {
        if (existsSync(dir) && readdirSync(dir).length === 0) rmdirSync(dir)
      }
      assert.isFalse(existsSync(runDir))
    }))
})
