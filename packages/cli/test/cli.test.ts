import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { PgConnection } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import packageJson from "../package.json" with { type: "json" }
import { EmbeddedPostgres, ServerUser } from "@slotkeeper/testkit"
import { freePort, start, until } from "./cli-helpers.ts"

const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "slotkeeper.js")
const cli = (...args: Array<string>) => spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" })

describe("slotkeeper --help / --version", () => {
  it("--version prints the package version", () => {
    const r = cli("--version")
    assert.strictEqual(r.status, 0)
    assert.strictEqual(r.stdout.trim(), `slotkeeper v${packageJson.version}`)
  })

  it("--help describes the command and lists its subcommands", () => {
    const r = cli("--help")
    assert.strictEqual(r.status, 0)
    assert.match(r.stdout, /logical replication stream/)
    assert.match(r.stdout, /SUBCOMMANDS[\s\S]*run[\s\S]*status[\s\S]*check[\s\S]*slots[\s\S]*embedded/)
  })

  it("a bad flag value is rejected with a message that says what to change", () => {
    const r = cli("embedded", "--port", "70000")
    assert.notStrictEqual(r.status, 0)
    assert.match(r.stdout + r.stderr, /--port 70000 is not a TCP port: use 1\.\.65535/)
  })
})

/** Starts `slotkeeper embedded`, resolving with the DATABASE_URL it prints; killed with SIGTERM on release. */
const startEmbedded = (dir: string, port: number) =>
  Effect.acquireRelease(
    Effect.callback<{ child: ChildProcess; url: string }, Error>((resume) => {
      const child = spawn(process.execPath, [bin, "embedded", "--data-dir", dir, "--port", String(port)], { stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      const onData = (d: Buffer) => {
        out += d.toString()
        const url = /^DATABASE_URL=(\S+)$/m.exec(out)?.[1]
        if (url !== undefined) resume(Effect.succeed({ child, url }))
      }
      child.stdout!.on("data", onData)
      child.stderr!.on("data", onData)
      child.on("exit", (code) => resume(Effect.fail(new Error(`slotkeeper embedded exited with ${code}:\n${out}`))))
    }),
    ({ child }) => stopChild(child)
  )

const stopChild = (child: ChildProcess) =>
  Effect.callback<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
    child.kill("SIGTERM")
  })

const query = (url: string, sql: string) =>
  Effect.scoped(Effect.flatMap(PgConnection.make({ url: Redacted.make(url) }), (c) => c.query(sql)))

/** A temporary folder for the server (removed with the scope) and a free port. */
const folderAndPort = Effect.gen(function*() {
  const dir = mkdtempSync(join(tmpdir(), "slotkeeper-cli-test-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  return { dir, port: yield* Effect.promise(freePort) }
})

describe("slotkeeper embedded", () => {
  it.live("starts a logical-replication-ready PostgreSQL whose data survives a restart", () =>
    Effect.gen(function*() {
      const { dir, port } = yield* folderAndPort

      const first = yield* Effect.scoped(Effect.gen(function*() {
        const { child, url } = yield* startEmbedded(dir, port)
        assert.strictEqual(url, `postgres://postgres@127.0.0.1:${port}/postgres`)
        assert.deepStrictEqual((yield* query(url, "SHOW wal_level")).rows, [{ wal_level: "logical" }])
        yield* query(url, "CREATE TABLE kept (note text)")
        yield* query(url, "INSERT INTO kept VALUES ('from the first start')")
        return child
      }))
      // SIGTERM: a graceful stop, once finalizers have run
      assert.strictEqual(first.exitCode, 0)

      yield* Effect.scoped(Effect.gen(function*() {
        const { url } = yield* startEmbedded(dir, port)
        assert.deepStrictEqual((yield* query(url, "SELECT note FROM kept")).rows, [{ note: "from the first start" }])
      }))
    }))

  it.live("after the process is killed (SIGKILL) its server keeps running without it: the next start stops that one first, and the data is there", () =>
    Effect.gen(function*() {
      const { dir, port } = yield* folderAndPort
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const { child, url } = yield* startEmbedded(dir, port)
        yield* query(url, "CREATE TABLE kept (note text)")
        yield* query(url, "INSERT INTO kept VALUES ('before the kill')")
        child.kill("SIGKILL")
        yield* Effect.callback<void>((resume) => void child.once("exit", () => resume(Effect.void)))
        return url
      }))
      // the orphaned server still answers
      assert.deepStrictEqual((yield* query(first, "SELECT note FROM kept")).rows, [{ note: "before the kill" }])
      const output = yield* Effect.scoped(Effect.gen(function*() {
        const { child, url } = yield* startEmbedded(dir, port)
        assert.deepStrictEqual((yield* query(url, "SELECT note FROM kept")).rows, [{ note: "before the kill" }])
        return child
      }))
      assert.strictEqual(output.exitCode, 0)
    }))

  it.live("a port in use is an error that names it", () =>
    Effect.gen(function*() {
      const { dir, port } = yield* folderAndPort
      const blocker = createServer().listen(port, "127.0.0.1")
      yield* Effect.addFinalizer(() => Effect.sync(() => blocker.close()))
      const failed = yield* Effect.flip(Effect.scoped(startEmbedded(dir, port)))
      assert.match(failed.message, new RegExp(`port ${port}`))
      assert.match(failed.message, /Address already in use|could not bind/)
    }))
})

describe("slotkeeper run with the embedded PostgreSQL (no --database-url)", () => {
  it.live("started as root from a private (0700) folder, as npm start in a mktemp -d clone: the server's data goes where its user can reach it, and the demo table's changes arrive", () =>
    Effect.gen(function*() {
      // a private folder above the embedded one: PostgreSQL's unprivileged user cannot pass it
      const { dir: parent, port } = yield* folderAndPort
      chmodSync(parent, 0o700)
      const dir = join(parent, ".slotkeeper", "postgres-18")
      const user = yield* ServerUser.resolve
      const used = EmbeddedPostgres.folderFor(dir, user)
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(used, { recursive: true, force: true })))
      if (user.kind === "switched") assert.notStrictEqual(used, dir)
      const r = yield* start(["--stream-id", "demo"], { SLOTKEEPER_EMBEDDED_DIR: dir, SLOTKEEPER_EMBEDDED_PORT: String(port) })
      const line = yield* until(() => r.lines.find((l) => l.type === "change"), 60_000, "a change line from the demo table")
      assert.strictEqual(line.table, "ticks")
      if (user.kind === "switched") assert.include(r.stderr(), `the embedded server's data is kept in ${used}`)
      r.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => r.exited), 0)
    }))
})
