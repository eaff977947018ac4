import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as FileSink from "../src/sinks/FileSink.ts"

const temp = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "slotkeeper-filesink-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const commit = (lsn: string) => JSON.stringify({ type: "commit", xid: 7, commit_lsn: "0/10", lsn, commit_time: "", slot: "slotkeeper_orders_1", system_id: "42", timeline: 1 })

describe("FileSink (local file)", () => {
  it.effect("on start, cuts an uncommitted transaction's lines and a torn last line; the position is the last marker's", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      const kept = `{"type":"change","new":{"id":1}}\n${commit("0/2A")}\n`
      writeFileSync(path, `${kept}{"type":"change","new":{"id":2}}\n{"type":"change","new":{"id":3}}\n{"type":"chan`)
      const file = yield* FileSink.make(path)
      assert.strictEqual(readFileSync(path, "utf8"), kept)
      assert.deepStrictEqual(yield* file.checkpoint.load, { lsn: 0x2an, systemId: "42", timeline: 1, slotName: "slotkeeper_orders_1" })
      // appends go after what was kept
      yield* file.sink.write(['{"type":"change","new":{"id":2}}', commit("0/30")])
      yield* file.sink.commit
      assert.strictEqual(readFileSync(path, "utf8"), `${kept}{"type":"change","new":{"id":2}}\n${commit("0/30")}\n`)
    }))

  it.effect("a file without any marker starts empty (nothing was acknowledged); a marker split across read chunks is found", () =>
    Effect.gen(function*() {
      const dir = yield* temp
      const none = join(dir, "none.ndjson")
      writeFileSync(none, `{"type":"change","new":{"id":1}}\n{"type":"change"`)
      const file = yield* FileSink.make(none)
      assert.strictEqual(readFileSync(none, "utf8"), "")
      assert.isUndefined(yield* file.checkpoint.load)
      const big = join(dir, "big.ndjson")
      const filler = `{"type":"change","new":{"body":"${"x".repeat(70_000)}"}}\n` // longer than one read chunk
      writeFileSync(big, `${commit("0/1")}\n${filler}${commit("0/2")}\n${filler}`)
      const again = yield* FileSink.make(big)
      assert.deepStrictEqual((yield* again.checkpoint.load)?.lsn, 2n)
      assert.strictEqual(readFileSync(big, "utf8"), `${commit("0/1")}\n${filler}${commit("0/2")}\n`)
    }))

  it.effect("a save during a transaction waits for its commit line: never between a transaction's lines", () =>
    Effect.gen(function*() {
      const path = join(yield* temp, "changes.ndjson")
      const file = yield* FileSink.make(path)
      yield* file.sink.write(['{"type":"change","new":{"id":1}}'])
      const saving = yield* Effect.forkChild(file.checkpoint.save({ lsn: 5n, systemId: "42", timeline: 1, slotName: "s_1" }), { startImmediately: true })
      yield* file.sink.write([commit("0/30")])
      yield* file.sink.commit
      yield* Fiber.join(saving)
      const lines = readFileSync(path, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { type: string }).type)
      assert.deepStrictEqual(lines, ["change", "commit", "checkpoint"])
    }))
})
