/**
 * `slotkeeper run`, driven as a child process (the built CLI, as a user runs it) against test-kit clusters.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DeliveryCheck, PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { bin, freePort, get, ids, start, streaming, until, untilEffect } from "./cli-helpers.ts"


describe("slotkeeper run (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("each bad input exits 2 with one line that names the option, before touching a database", () =>
    Effect.gen(function*() {
      const unreachable = "postgres://someone:s3cret@127.0.0.1:1/nowhere"
      const cases: Array<[Array<string>, RegExp]> = [
        [["--stream-id", "Orders!", "--database-url", unreachable, "--table", "t"], /--stream-id: stream id "Orders!" is not valid/],
        [["--table", "a.b.c", "--database-url", unreachable], /--table: "a\.b\.c" has more than two parts/],
        [["--table", "\"unterminated", "--database-url", unreachable], /--table: .* unterminated quoted name/],
        [["--table", "t", "--lock", "mutex", "--database-url", unreachable], /--lock: "mutex": use advisory or lease/],
        [["--table", "t", "--slot-mode", "shared", "--database-url", unreachable], /--slot-mode: "shared": use temporary or persistent/],
        [["--table", "t", "--sink", "ftp://x", "--database-url", unreachable], /--sink: "ftp:\/\/x" is not a sink/],
        [["--table", "t", "--database-url", "mysql://x/y"], /--database-url: must be a postgres:\/\/ or postgresql:\/\/ URL/],
        [["--table", "t", "--instance-id", "a b", "--database-url", unreachable], /--instance-id: instance id "a b" is not valid/],
        [["--database-url", unreachable], /--table: name at least one table/]
      ]
      for (const [args, message] of cases) {
        const r = yield* Effect.scoped(Effect.gen(function*() {
          const running = yield* start(args)
          const code = yield* Effect.promise(() => running.exited)
          return { code, stderr: running.stderr(), stdout: running.lines }
        }))
        assert.strictEqual(r.code, 2, `${args.join(" ")}: ${r.stderr}`)
        assert.match(r.stderr, message)
        assert.strictEqual(r.stderr.trim().split("\n").length, 1, r.stderr)
        assert.notInclude(r.stderr, "s3cret")
        assert.deepStrictEqual(r.stdout, [])
      }
    }))

  it.live("streams a table as NDJSON; SIGTERM drains and exits 0; the next run repeats nothing and loses nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const args = ["--database-url", pg.url, "--table", "public.items", "--instance-id", "a"]
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const a = yield* start(args)
        yield* streaming(pg)
        for (let id = 1; id <= 3; id++) yield* pg.query(`INSERT INTO items VALUES (${id}, 'row ${id}')`)
        yield* until(() => (ids(a).length >= 3 ? true : undefined), 20_000, "three lines")
        a.child.kill("SIGTERM")
        const code = yield* Effect.promise(() => a.exited)
        return { code, ids: ids(a), line: a.lines[0], stderr: a.stderr() }
      }))
      assert.strictEqual(first.code, 0, first.stderr)
      assert.deepStrictEqual(first.ids, [1, 2, 3])
      assert.include(first.line, { type: "change", op: "insert", schema: "public", table: "items", seq: 1 })
      assert.deepStrictEqual(first.line?.new, { id: 1, body: "row 1" })
      yield* pg.query("INSERT INTO items VALUES (4, 'while stopped'), (5, 'while stopped')")
      const second = yield* start(args)
      yield* until(() => (ids(second).length >= 2 ? true : undefined), 30_000, "the rows written while stopped")
      yield* Effect.sleep("500 millis")
      assert.deepStrictEqual(ids(second), [4, 5])
    }))

  it.live("rolling deploy: B waits (healthy, not the owner) while A runs; SIGTERM to A; B takes over; nothing lost, nothing acknowledged repeated; /health, /health/owner, /metrics through it", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
      const args = (name: string, port: number) => ["--database-url", pg.url, "--table", "items", "--instance-id", name, "--http-port", String(port)]
      const a = yield* start(args("a", portA))
      yield* streaming(pg)
      const b = yield* start(args("b", portB))
      // health through the phases: a active and the owner, b healthy while it waits, not the owner
      yield* until(() => (/serving GET \/health/.test(b.stderr()) ? true : undefined), 30_000, "b's http server")
      assert.deepStrictEqual(yield* get(portA, "/health"), { status: 200, body: { state: "active" } })
      assert.deepStrictEqual(yield* get(portA, "/health/owner"), { status: 200, body: { state: "active", owner: true } })
      const waiting = yield* untilEffect(Effect.map(get(portB, "/health"), (r) => ((r.body as { state: string }).state === "waiting" ? r : undefined)), 10_000, "b waiting")
      assert.strictEqual(waiting.status, 200)
      assert.strictEqual((yield* get(portB, "/health/owner")).status, 503)
      // a writer, one row per transaction, throughout
      const written = { next: 1 }
      yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const ok = yield* pg.query(`INSERT INTO items VALUES (${written.next}, 'x') ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (ok) written.next++
        yield* Effect.sleep("10 millis")
      })))
      yield* until(() => (ids(a).length >= 30 ? true : undefined), 30_000, "a delivering")
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${portA}/metrics`).then((r) => r.text()))
      assert.include(metrics, 'slotkeeper_state{stream="default",state="active"} 1')
      assert.match(metrics, /slotkeeper_ownership_epoch\{stream="default"\} 1/)
      assert.match(metrics, /slotkeeper_changes_delivered_total\{stream="default"\} [1-9]\d*/)
      assert.match(metrics, /slotkeeper_slot_wal_status\{stream="default",slot="slotkeeper_default_1",wal_status="reserved"\} 1/)
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0)
      // where a's acknowledgements were saved when it let go: b must not repeat anything at or below it
      const [saved] = yield* pg.query<{ lsn: string }>("SELECT lsn::text AS lsn FROM slotkeeper.checkpoints WHERE stream_id = 'default'")
      yield* until(() => (/ownership of stream default acquired/.test(b.stderr()) ? true : undefined), 10_000, "b owning")
      assert.deepStrictEqual(yield* get(portB, "/health/owner"), { status: 200, body: { state: "active", owner: true } })
      yield* until(() => (ids(b).length >= 30 ? true : undefined), 30_000, "b delivering")
      const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
      yield* until(() => (committed.every((id) => ids(a).includes(id) || ids(b).includes(id)) ? true : undefined), 30_000, "every committed row delivered")
      const lsn = (text: string) => BigInt(`0x${text.split("/")[0]}`) << 32n | BigInt(`0x${text.split("/")[1]}`)
      const delivered = [
        ...a.lines.filter((l) => l.type === "change").map((l) => ({ key: Number((l.new as { id: number }).id), endLsn: lsn(l.commit_lsn as string), session: 1 })),
        ...b.lines.filter((l) => l.type === "change").map((l) => ({ key: Number((l.new as { id: number }).id), endLsn: lsn(l.commit_lsn as string), session: 2 }))
      ]
      // commit_lsn is where a commit starts: below the saved end position means acknowledged (DeliveryCheck: <= start)
      const report = DeliveryCheck.check({ committed, delivered, sessionStarts: new Map([[2, lsn(saved!.lsn) - 1n]]) })
      assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
      assert.isAtLeast(committed.length, 60) // at least 30 delivered by each
    }))

  it.live("file: sink: SIGKILL mid-write leaves no torn line after the restart, and every committed change is in the file exactly once", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const dir = mkdtempSync(join(tmpdir(), "slotkeeper-file-sink-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const path = join(dir, "changes.ndjson")
      const args = ["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--sink", `file:${path}`]
      const changeCount = () => readFileSync(path, "utf8").split("\n").filter((l) => l.startsWith("{\"type\":\"change\"")).length
      const first = yield* start(args)
      yield* streaming(pg) // changes committed before the stream's slot exists are not the stream's
      // transactions of 50 rows, written throughout
      const written = { next: 1 }
      const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const from = written.next
        const ok = yield* pg.query(`INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(${from}, ${from + 49}) g ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (ok) written.next += 50
        yield* Effect.sleep("5 millis")
      })).pipe(Effect.delay("0 millis")))
      yield* until(() => (existsSync(path) && changeCount() >= 2000 ? true : undefined), 60_000, "2,000 changes in the file")
      first.child.kill("SIGKILL") // mid-write, most likely
      yield* Effect.promise(() => first.exited)
      const second = yield* start(args)
      yield* until(() => (changeCount() >= 4000 ? true : undefined), 60_000, "more changes after the restart")
      yield* Fiber.interrupt(writer)
      const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
      yield* until(() => {
        const text = readFileSync(path, "utf8")
        return committed.every((id) => text.includes(`"new":{"id":${id},`)) ? true : undefined
      }, 60_000, "every committed row in the file")
      second.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => second.exited), 0)
      const lines = readFileSync(path, "utf8").split("\n")
      assert.strictEqual(lines.pop(), "") // ends with a newline: no torn line
      const parsed = lines.map((l) => JSON.parse(l) as { type: string; new?: { id: number } })
      const ids = parsed.filter((l) => l.type === "change").map((l) => l.new!.id)
      assert.deepStrictEqual([...ids].sort((x, y) => x - y), committed, "each committed change exactly once")
    }))

  it.live("status shows the owner, the slot with wal_status and lag, the publication's tables and the position; no owner after it stops", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a"])
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'x')")
      yield* until(() => (ids(a).length >= 1 ? true : undefined), 20_000, "a row")
      const status = () =>
        Effect.promise(() =>
          new Promise<string>((resolve) => {
            const child = spawn(process.execPath, [bin, "status", "--database-url", pg.url, "--json"], { stdio: ["ignore", "pipe", "inherit"] })
            let out = ""
            child.stdout!.on("data", (d: Buffer) => (out += d.toString()))
            child.on("exit", () => resolve(out))
          })
        ).pipe(Effect.map((out) => (JSON.parse(out) as { streams: Array<Record<string, any>> }).streams))
      const [running] = yield* status()
      assert.include(running!.owner, { instance: "a", mode: "advisory", epoch: 1 })
      assert.deepStrictEqual(running!.publication, { name: "slotkeeper_default", tables: ["public.items"] })
      assert.include(running!.slots[0], { slot: "slotkeeper_default_1", state: "active", exists: true, walStatus: "reserved", invalidation: null })
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0)
      const [stopped] = yield* status()
      assert.isNull(stopped!.owner)
      assert.match(stopped!.position as string, /^[0-9A-F]+\/[0-9A-F]+$/)
    }))
})
