/**
 * The file sink on a local file: what a connection finds at its start (the tail repaired, the position read back, a
 * newer owner's file refused), where positions may be written, and the file's lock.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import { OwnershipLost } from "../src/index.ts"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger, Scope } from "effect"
import * as FileSink from "../src/sink/FileSink.ts"
import type { Fence } from "../src/sink/Sink.ts"

const temp = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "slotkeeper-filesink-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const fence = (epoch = 1): Fence => ({ streamId: "orders", epoch, assertFresh: Effect.void })
const identity = { systemId: "42", timeline: 1, slotName: "slotkeeper_orders_1" }
const commit = (lsn: string, epoch?: number) =>
  JSON.stringify({ type: "commit", ...(epoch === undefined ? {} : { epoch }), xid: 7, commit_lsn: "0/10", lsn, commit_time: "", slot: "slotkeeper_orders_1", system_id: "42", timeline: 1 })
const change = (id: number) => `{"type":"change","epoch":1,"new":{"id":${id}}}`
const types = (path: string) => readFileSync(path, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { type: string }).type)

/** Opens `path` for a holding period at `epoch` (in the test's scope). */
const period = (path: string, epoch = 1) => Effect.flatMap(FileSink.make(path), (file) => file.open(fence(epoch)))

describe("FileSink (local file)", () => {
  it.effect("at a connection's start: an uncommitted transaction's lines and a torn last line are cut; the position is the last marker's", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      const kept = `${change(1)}\n${commit("0/2A")}\n`
      writeFileSync(path, `${kept}${change(2)}\n${change(3)}\n{"type":"chan`)
      const file = yield* period(path)
      assert.deepStrictEqual(yield* file.checkpoint.load, { lsn: 0x2an, ...identity })
      assert.strictEqual(readFileSync(path, "utf8"), kept)
      // appends go after what was kept
      const line = file.commitLine({ xid: 8, commitLsn: 0x2cn, endLsn: 0x30n, commitTime: "", position: { lsn: 0x2an, ...identity } })
      yield* file.sink.write([change(2), line], true)
      yield* file.sink.commit
      assert.strictEqual(readFileSync(path, "utf8"), `${kept}${change(2)}\n${line}\n`)
      assert.include(line, `"epoch":1`)
    }))

  it.effect("a file without any marker starts empty (nothing was acknowledged); a marker split across read chunks is found", () =>
    Effect.gen(function*() {
      const dir = yield* temp
      const none = join(dir, "none.ndjson")
      writeFileSync(none, `${change(1)}\n{"type":"change"`)
      assert.isUndefined(yield* (yield* period(none)).checkpoint.load)
      assert.strictEqual(readFileSync(none, "utf8"), "")
      const big = join(dir, "big.ndjson")
      const filler = `{"type":"change","new":{"body":"${"x".repeat(70_000)}"}}\n` // longer than one read chunk
      writeFileSync(big, `${commit("0/1")}\n${filler}${commit("0/2")}\n${filler}`)
      assert.deepStrictEqual((yield* (yield* period(big)).checkpoint.load)?.lsn, 2n)
      assert.strictEqual(readFileSync(big, "utf8"), `${commit("0/1")}\n${filler}${commit("0/2")}\n`)
    }))

  it.effect("every connection reloads: a transaction the previous connection left half written is cut, not carried into the next", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      const file = yield* period(path)
      assert.isUndefined(yield* file.checkpoint.load)
      const first = file.commitLine({ xid: 1, commitLsn: 0x10n, endLsn: 0x20n, commitTime: "", position: { lsn: 0n, ...identity } })
      yield* file.sink.write([change(1), first, change(2)], false) // the connection ends inside the next transaction
      yield* file.sink.commit
      assert.deepStrictEqual(types(path), ["change", "commit", "change"])
      // the next connection (same process, same holding period) starts from the file as it is
      assert.deepStrictEqual((yield* file.checkpoint.load)?.lsn, 0x20n)
      assert.deepStrictEqual(types(path), ["change", "commit"])
    }))

  it.effect("positions: never between a transaction's lines (deferred, never waited for); never written twice; a checkpoint line only past the last commit", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      const file = yield* period(path)
      yield* file.checkpoint.load
      const done = file.commitLine({ xid: 1, commitLsn: 0x10n, endLsn: 0x20n, commitTime: "", position: { lsn: 0n, ...identity } })
      yield* file.sink.write([change(1), done], true)
      yield* file.sink.commit
      // the position of the commit line: held by the file already, nothing written
      assert.deepStrictEqual(yield* file.checkpoint.save({ lsn: 0x20n, ...identity }), { walPosition: undefined })
      assert.deepStrictEqual(types(path), ["change", "commit"])
      // a transaction half written: a position past the last commit (idle progress) cannot be placed now
      yield* file.sink.write([change(2)], false)
      assert.deepStrictEqual(yield* file.checkpoint.save({ lsn: 0x28n, ...identity }), { walPosition: undefined, deferred: true })
      assert.deepStrictEqual(types(path), ["change", "commit", "change"])
      // at a boundary it is written, and fsynced before the save returns
      const next = file.commitLine({ xid: 2, commitLsn: 0x30n, endLsn: 0x40n, commitTime: "", position: { lsn: 0x20n, ...identity } })
      yield* file.sink.write([next], true)
      yield* file.sink.commit
      yield* file.checkpoint.save({ lsn: 0x48n, ...identity })
      assert.deepStrictEqual(types(path), ["change", "commit", "change", "commit", "checkpoint"])
      assert.deepStrictEqual((yield* file.checkpoint.load)?.lsn, 0x48n)
    }))

  it.effect("a file last written by a newer owner (a higher epoch) is refused with OwnershipLost; an older epoch's is taken over", () =>
    Effect.gen(function*() {
      const dir = yield* temp
      const newer = join(dir, "newer.ndjson")
      writeFileSync(newer, `${change(1)}\n${commit("0/2A", 5)}\n`)
      const refused = yield* Effect.flip((yield* period(newer, 4)).checkpoint.load)
      assert.instanceOf(refused, OwnershipLost)
      assert.match(refused.message, /last written by a newer owner \(epoch 5; this instance holds epoch 4\)/)
      assert.strictEqual(readFileSync(newer, "utf8"), `${change(1)}\n${commit("0/2A", 5)}\n`) // untouched
      const older = join(dir, "older.ndjson")
      writeFileSync(older, `${commit("0/2A", 3)}\n`)
      assert.deepStrictEqual((yield* (yield* period(older, 4)).checkpoint.load)?.lsn, 0x2an)
    }))

  it.live("one holding period at a time: a second open waits for the lock and goes on once it is released; a dead holder's lock is taken over", () =>
    Effect.gen(function*() {
      const dir = yield* temp
      const path = join(dir, "changes.ndjson")
      const first = yield* Scope.make()
      yield* Scope.provide(first)(period(path, 1))
      const lock = JSON.parse(readFileSync(`${path}.lock`, "utf8")) as { pid: number; epoch: number }
      assert.deepInclude(lock, { pid: process.pid, epoch: 1 })
      const logged: Array<string> = []
      const second = yield* Effect.forkChild(
        Effect.scoped(Effect.flatMap(period(path, 2), () => Effect.sync(() => JSON.parse(readFileSync(`${path}.lock`, "utf8")) as { epoch: number }))).pipe(
          Effect.provide(Logger.layer([Logger.make((o) => void logged.push(String(o.message)))]))
        ),
        { startImmediately: true }
      )
      yield* Effect.sleep("500 millis")
      assert.isUndefined(second.pollUnsafe(), "the second open went on while the first held the lock")
      assert.match(logged.join("\n"), /is locked by pid \d+ on .* \(stream orders, epoch 1\): waiting for it to let go/)
      yield* Scope.close(first, Exit.void)
      assert.deepInclude(yield* Fiber.join(second), { epoch: 2 })
      assert.isFalse(existsSync(`${path}.lock`))
      // a lock left by a process that is gone (SIGKILL): stale, taken over at once
      writeFileSync(`${path}.lock`, JSON.stringify({ pid: 2 ** 22 + 1, host: hostname(), started: "1", stream: "orders", epoch: 1 }))
      yield* Effect.scoped(period(path, 3))
    }))

  it.effect("a full disk: the write fails with a SinkError that names the file (exit 1 with that line)", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      symlinkSync("/dev/full", path) // every write answers ENOSPC
      const file = yield* period(path)
      yield* file.checkpoint.load
      const error = yield* Effect.flip(file.sink.write([change(1)], false))
      assert.strictEqual(error._tag, "SinkError")
      assert.match(error.message, new RegExp(`^writing to ${path}: ENOSPC`))
    }))
})

