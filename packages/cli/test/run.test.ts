/**
 * `slotkeeper run`, driven as a child process (the built CLI, as a user runs it) against test-kit clusters.
 */
import { spawn } from "node:child_process"
import { createServer } from "node:http"
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { bin, freePort, get, ids, judgeHandover, loggedAt, start, streaming, until, untilEffect } from "./cli-helpers.ts"


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
        [["--table", "t", "--sink", "http://ingest:s3cret@bad host/x", "--database-url", unreachable], /--sink: "http:\/\/ingest:\*\*\*@bad host\/x" is not a URL/],
        [["--table", "t", "--sink", "htp://ingest:s3cret@host/x?token=s3cret", "--database-url", unreachable], /--sink: "htp:\/\/ingest:\*\*\*@host\/x\?token=\*\*\*" is not a sink/],
        [["--table", "t", "--database-url", "mysql://x/y"], /--database-url: must be a postgres:\/\/ or postgresql:\/\/ URL/],
        [["--table", "t", "--instance-id", "a b", "--database-url", unreachable], /--instance-id: instance id "a b" is not valid/],
        [["--database-url", unreachable], /--table: name at least one table/],
        [["--table", "t WHERE id > 0; DROP TABLE t", "--database-url", unreachable], /--table: .*contains ';'/],
        [["--table", "t (id", "--database-url", unreachable], /--table: .*column list is not closed/],
        [["--table", "t", "--loss-deadline", "soon", "--database-url", unreachable], /--loss-deadline: "soon" is not a positive duration/],
        [["--table", "t", "--loss-deadline", "9s", "--database-url", unreachable], /--server-release-bound: .*must not exceed/],
        [["--table", "t", "--on-sink-rejected", "retry", "--database-url", unreachable], /--on-sink-rejected: "retry": use fail or skip/],
        [["--config", "/nonexistent/slotkeeper.json", "--database-url", unreachable], /--config: cannot read \/nonexistent\/slotkeeper\.json/],
        // an unknown flag: one line naming it and where the flags are listed (nothing on stdout, which carries data)
        [["--table", "t", "--databse-url", unreachable], /^slotkeeper: unknown flag --databse-url \(did you mean --database-url\?\) \(see: slotkeeper run --help\)\n$/]
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

  it.live("bad input found on the server (tables, columns, filters, replica identity, privileges, settings) exits 2 with the fix and leaves the catalog exactly as it was", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("INSERT INTO items VALUES (1, 'one')")
      yield* pg.query("CREATE TABLE nokey (a int, b text)")
      // a role that may log in and replicate, but owns none of the tables; and one that owns a table but may not replicate
      yield* pg.query("CREATE ROLE sk LOGIN REPLICATION")
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO sk")
      yield* pg.query("CREATE ROLE plain LOGIN")
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO plain")
      yield* pg.query("CREATE TABLE owned_by_plain (id int PRIMARY KEY)")
      yield* pg.query("ALTER TABLE owned_by_plain OWNER TO plain")
      // everything a run could create or change: schemas, relations with their replica identity, publications, slots, rows, epochs
      const catalog = (server: typeof pg) => Effect.map(server.query<{ c: string }>(`SELECT json_build_object(
          'schemas', (SELECT json_agg(nspname ORDER BY nspname) FROM pg_namespace),
          'relations', (SELECT json_agg(concat(c.oid::regclass::text, ' ', c.relkind::text, c.relreplident::text) ORDER BY c.oid) FROM pg_class c
                         WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)),
          'publications', (SELECT json_agg(pubname ORDER BY pubname) FROM pg_publication),
          'publication_tables', (SELECT count(*) FROM pg_publication_rel),
          'slots', (SELECT json_agg(slot_name ORDER BY slot_name) FROM pg_replication_slots),
          'rows', (SELECT json_agg(i ORDER BY i.id) FROM items i),
          'advisory_locks', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'))::text AS c`), ([r]) => r!.c)
      const before = yield* catalog(pg)
      assert.include(before, "items", before)
      const as = (user: string) => pg.urlWith({ user })
      // a port another process listens on
      const busy = yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<ReturnType<typeof createServer>>((resolve) => { const server = createServer().listen(0, () => resolve(server)) })),
        (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      )
      const busyPort = (busy.address() as { port: number }).port
      const cases: Array<[Array<string>, RegExp]> = [
        [["--table", "nosuch"], /^slotkeeper: --table: subscription "public\.nosuch" \(table public\.nosuch\): no such table/],
        [["--table", "\"Items\""], /--table: .*public\.Items.*no such table \(names are exact: check the schema, the table name and its case\)/],
        [["--table", "items (id, nope)"], /--table: .*no column "nope" \(it has id, body\)/],
        [["--table", "items WHERE nosuchcolumn > 0"], /--table: .*PostgreSQL refuses it: .*nosuchcolumn/],
        [["--table", "nokey"], /--table: .*no replica identity .*refuses UPDATE and DELETE.*Add a primary key/],
        [["--table", "items WHERE body = 'x'"], /--table: .*the row filter uses body, which the replica identity \(id\) does not cover/],
        [["--table", "items (body)"], /--table: .*the column list leaves out the replica identity column\(s\) id/],
        [["--table", "items", "--table", "nosuch"], /--table: .*public\.nosuch.*no such table/],
        [["--table", "owned_by_plain", "--database-url", as("sk")], /--table: .*owned by plain; adding a table to a publication requires owning it/],
        [["--table", "owned_by_plain", "--database-url", as("plain")], /^slotkeeper: --database-url: role: role plain lacks REPLICATION: as an administrator, ALTER ROLE "plain" REPLICATION$/],
        [["--table", "items", "--lock", "mutex"], /--lock: "mutex": use advisory or lease/],
        [["--table", "items", "--http-port", String(busyPort)], new RegExp(`^slotkeeper: --http-port ${busyPort}: cannot listen \\(EADDRINUSE\\): another process uses the port; choose another$`)]
      ]
      for (const [args, message] of cases) {
        const r = yield* Effect.scoped(Effect.gen(function*() {
          const running = yield* start(args.includes("--database-url") ? [...args, "--instance-id", "a"] : ["--database-url", pg.url, ...args, "--instance-id", "a"])
          const code = yield* Effect.promise(() => running.exited).pipe(
            Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.die(new Error(`${args.join(" ")}: still running after 30 s: ${running.stderr()}`)) })
          )
          return { code, stderr: running.stderr(), stdout: running.lines }
        }))
        const last = r.stderr.trim().split("\n").at(-1)!
        assert.strictEqual(r.code, 2, `${args.join(" ")}: ${r.stderr}`)
        assert.match(last, message, args.join(" "))
        assert.deepStrictEqual(r.stdout, [])
        assert.strictEqual(yield* catalog(pg), before, `${args.join(" ")} changed the catalog`)
      }
      // a server that cannot carry a stream at all: wal_level below logical
      const replica = yield* PgCluster.make({ major: 18, settings: { wal_level: "replica" } })
      yield* replica.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const unchanged = yield* catalog(replica)
      const r = yield* Effect.scoped(Effect.gen(function*() {
        const running = yield* start(["--database-url", replica.url, "--table", "items"])
        return { code: yield* Effect.promise(() => running.exited), stderr: running.stderr() }
      }))
      assert.strictEqual(r.code, 2, r.stderr)
      assert.match(r.stderr.trim().split("\n").at(-1)!, /^slotkeeper: --database-url: wal_level: wal_level is replica: ALTER SYSTEM SET wal_level = logical, then restart the server$/)
      assert.strictEqual(yield* catalog(replica), unchanged)
    }))

  it.live("a server that overrides the lock session's idle_session_timeout (the release bound would not hold): exit 2 with the fix, nothing created", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      // as a pooler or a login hook would: every slotkeeper session gets idle_session_timeout = 0
      yield* pg.query(`CREATE FUNCTION no_idle_timeout() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF current_setting('application_name') LIKE 'slotkeeper:%' THEN PERFORM set_config('idle_session_timeout', '0', false); END IF;
        END $$`)
      yield* pg.query("CREATE EVENT TRIGGER no_idle_timeout ON login EXECUTE FUNCTION no_idle_timeout()")
      const r = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a"])
      assert.strictEqual(yield* Effect.promise(() => r.exited), 2, r.stderr())
      const last = r.stderr().trim().split("\n").at(-1)!
      assert.match(last, /^slotkeeper: --server-release-bound: the lock session's idle_session_timeout reads 0 ms, not the 4000 ms slotkeeper set.*use lease mode/)
      assert.deepStrictEqual(yield* pg.query("SELECT nspname FROM pg_namespace WHERE nspname = 'slotkeeper'"), [])
    }))

  it.live("streams a table as NDJSON; SIGTERM drains and exits 0; the next run repeats nothing and loses nothing", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const args = ["--database-url", pg.url, "--instance-id", "a"]
      const env = { SLOTKEEPER_TABLES: "public.items", SLOTKEEPER_LOG_FORMAT: "json" }
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const a = yield* start(args, env)
        yield* streaming(pg)
        for (let id = 1; id <= 3; id++) yield* pg.query(`INSERT INTO items VALUES (${id}, 'row ${id}')`)
        yield* until(() => (ids(a).length >= 3 ? true : undefined), 20_000, "three lines")
        a.child.kill("SIGTERM")
        const code = yield* Effect.promise(() => a.exited)
        return { code, ids: ids(a), shape: a.lines[0], line: a.lines.find((l) => l.type === "change"), lastCommitLsn: a.lines.at(-1)?.commit_lsn as string, stderr: a.stderr() }
      }))
      assert.strictEqual(first.code, 0, first.stderr)
      assert.deepStrictEqual(first.ids, [1, 2, 3])
      // the table's shape first (a schema line: before its first change on the connection), then the change
      assert.include(first.shape, { type: "schema", schema: "public", table: "items" })
      assert.deepStrictEqual(first.shape?.columns, [
        { name: "id", type: "integer", type_oid: 23, type_modifier: -1, key: true },
        { name: "body", type: "text", type_oid: 25, type_modifier: -1, key: false }
      ])
      assert.strictEqual(first.shape?.commit_lsn, first.line?.commit_lsn)
      assert.include(first.line, { type: "change", op: "insert", schema: "public", table: "items", seq: 1 })
      assert.deepStrictEqual(first.line?.new, { id: 1, body: "row 1" })
      // SLOTKEEPER_LOG_FORMAT=json: every log line on stderr is a JSON object with its level and message
      const logs = first.stderr.trim().split("\n").map((l) => JSON.parse(l) as { level: string; message: unknown })
      assert.isTrue(logs.some((l) => l.level === "INFO" && String(l.message).includes("ownership of stream default acquired")), first.stderr)
      // the drain: the last acknowledgement saved, and the persistent slot advanced exactly to it, before the release
      const [drained] = yield* pg.query<{ saved: string; slot: string; covers_last: boolean }>(
        `SELECT c.lsn::text AS saved, s.confirmed_flush_lsn::text AS slot, c.lsn > $1::pg_lsn AS covers_last
           FROM slotkeeper.checkpoints c, pg_replication_slots s WHERE c.stream_id = 'default' AND s.slot_name = 'slotkeeper_default_1'`,
        [first.lastCommitLsn]
      )
      assert.isTrue(drained!.covers_last, `saved ${drained!.saved}, last commit at ${first.lastCommitLsn}`)
      assert.strictEqual(drained!.slot, drained!.saved)
      yield* pg.query("INSERT INTO items VALUES (4, 'while stopped'), (5, 'while stopped')")
      const second = yield* start(args, env)
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
      const healthA = yield* get(portA, "/health")
      assert.strictEqual(healthA.status, 200)
      assert.deepInclude(healthA.body as object, { state: "active", owner: true, capturing: true, epoch: 1 })
      assert.strictEqual((yield* get(portA, "/health/owner")).status, 200)
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
      yield* until(() => (/ownership of stream default acquired/.test(b.stderr()) ? true : undefined), 10_000, "b owning")
      // b, waiting with the default settings, is the owner within 1 s of a's release (each by its own log)
      const released = loggedAt(a, /ownership of stream default released/)
      const acquired = loggedAt(b, /ownership of stream default acquired/)
      assert.isDefined(released, a.stderr())
      assert.isBelow(acquired! - released!, 1000)
      // active once its replication connection streams (capture has begun)
      const ownerB = yield* untilEffect(Effect.map(get(portB, "/health/owner"), (r) => (r.status === 200 ? r : undefined)), 10_000, "b active")
      assert.deepInclude(ownerB.body as object, { state: "active", owner: true, capturing: true, epoch: 2 })
      const { committed, report } = yield* judgeHandover(pg, a, b)
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

  it.live("file: sink: the replication connection is cut again and again mid-stream; the process goes on (no false gap), and the file holds every committed change exactly once", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const dir = mkdtempSync(join(tmpdir(), "slotkeeper-file-reconnect-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const path = join(dir, "changes.ndjson")
      const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--sink", `file:${path}`])
      yield* streaming(pg)
      // transactions of 300 rows (an arrival of events often ends inside one), written throughout
      const written = { next: 1 }
      const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const from = written.next
        const ok = yield* pg.query(`INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(${from}, ${from + 299}) g ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (ok) written.next += 300
        yield* Effect.sleep("50 millis")
      })))
      // the walsender is terminated five times, each time once the connection after the last cut streams and has
      // written more (the file's size: cheap to read while it grows)
      const size = () => (existsSync(path) ? statSync(path).size : 0)
      const connections = () => (a.stderr().match(/streaming from/g) ?? []).length
      for (let cut = 1; cut <= 5; cut++) {
        yield* until(() => (connections() >= cut ? true : undefined), 60_000, `connection ${cut}`)
        const target = size() + 200_000
        yield* until(() => (size() >= target ? true : undefined), 60_000, `${target} bytes`)
        yield* pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'slotkeeper:default:a:repl'")
      }
      yield* until(() => (connections() >= 6 ? true : undefined), 60_000, "the connection after the last cut")
      yield* Fiber.interrupt(writer)
      const committed = (yield* pg.query<{ id: number }>("SELECT id FROM items ORDER BY id")).map((r) => r.id)
      const fileIds = () =>
        readFileSync(path, "utf8").split("\n").filter((l) => l.startsWith("{\"type\":\"change\"")).map((l) => (JSON.parse(l) as { new: { id: number } }).new.id)
      yield* until(() => (fileIds().length >= committed.length ? true : undefined), 60_000, "every committed row in the file")
      assert.strictEqual(a.child.exitCode, null, a.stderr())
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0)
      assert.deepStrictEqual(fileIds().sort((x, y) => x - y), committed, "each committed change exactly once")
    }))

  it.live("status shows the owner, the slot with wal_status and lag, the publication's tables and the position; no owner after it stops; a renamed table", () =>
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
            child.on("close", () => resolve(out))
          })
        ).pipe(Effect.map((out) => (JSON.parse(out) as { streams: Array<Record<string, any>> }).streams))
      const [running] = yield* status()
      assert.include(running!.owner, { instance: "a", mode: "advisory", epoch: 1, applicationName: "slotkeeper:default:a:lock" })
      assert.deepStrictEqual(running!.publication, { name: "slotkeeper_default", tables: ["public.items"] })
      assert.include(running!.slots[0], { slot: "slotkeeper_default_1", state: "active", exists: true, walStatus: "reserved", invalidation: null })
      const [created] = yield* pg.query<{ point: string }>("SELECT consistent_point::text AS point FROM slotkeeper.slots")
      assert.strictEqual(running!.captureStart, created!.point)
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0)
      const [stopped] = yield* status()
      assert.isNull(stopped!.owner)
      assert.match(stopped!.position as string, /^[0-9A-F]+\/[0-9A-F]+$/)
      assert.deepStrictEqual(stopped!.subscriptions, [{ id: "public.items", table: "public.items", state: "ok", now: "public.items" }])
      // the table renamed while nobody runs: status follows it by OID
      yield* pg.query("ALTER TABLE items RENAME TO items_renamed")
      yield* pg.query("CREATE TABLE items (id int)")
      const [renamed] = yield* status()
      assert.deepStrictEqual(renamed!.subscriptions, [{ id: "public.items", table: "public.items", state: "renamed", now: "public.items_renamed" }])
    }))
})

/** A server with table items, `slotkeeper run` streaming it, and row 1 delivered. */
const streamingOneRowWith = (extra: ReadonlyArray<string>) => Effect.gen(function*() {
  const pg = yield* PgCluster.make({ major: 18 })
  yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
  const args = ["--database-url", pg.url, "--table", "items", "--instance-id", "a", ...extra]
  const first = yield* start(args)
  yield* streaming(pg)
  yield* pg.query("INSERT INTO items VALUES (1, 'x')")
  yield* until(() => (ids(first).length >= 1 ? true : undefined), 20_000, "a row")
  return { pg, args, first }
})
const streamingOneRow = streamingOneRowWith([])

describe("slotkeeper run: fatal conditions and the http sink (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("a gap (the slot was advanced past the saved position behind slotkeeper's back) exits 1 with the explanation and delivers nothing", () =>
    Effect.gen(function*() {
      const { pg, args, first } = yield* streamingOneRow
      first.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => first.exited), 0)
      // written while nobody runs, then skipped by moving the slot past them: they can never be sent again
      yield* pg.query("INSERT INTO items VALUES (2, 'skipped'), (3, 'skipped')")
      yield* pg.query("SELECT end_lsn::text FROM pg_replication_slot_advance('slotkeeper_default_1', pg_current_wal_lsn())")
      const second = yield* start(args)
      const code = yield* Effect.promise(() => second.exited)
      assert.strictEqual(code, 1, second.stderr())
      // the last line is the explanation: the error's kind and its own message
      assert.match(second.stderr().trim().split("\n").at(-1)!, /^slotkeeper: ResumeRefused\/SlotAhead: .*will never be sent again/)
      assert.deepStrictEqual(second.lines, [])
    }))

  it.live("--on-slot-lost recreate: a slot dropped behind slotkeeper's back is replaced once, loudly (a resync line, an error log); the process goes on, and so does the next one", () =>
    Effect.gen(function*() {
      const { pg, args, first } = yield* streamingOneRowWith(["--on-slot-lost", "recreate"])
      yield* pg.query("SELECT pg_drop_replication_slot('slotkeeper_default_1')::text")
      yield* until(() => (/slotkeeper_default_1 was lost and replaced by slotkeeper_default_2/.test(first.stderr()) ? true : undefined), 40_000, "the resync")
      yield* pg.query("INSERT INTO items VALUES (2, 'after the replacement')")
      yield* until(() => (ids(first).includes(2) ? true : undefined), 20_000, "row 2")
      assert.strictEqual(first.child.exitCode, null, first.stderr())
      const resync = first.lines.filter((l) => l.type === "resync")
      assert.deepInclude(resync[0]!, { lost_slot: "slotkeeper_default_1", slot: "slotkeeper_default_2" })
      assert.isBelow(first.lines.indexOf(resync[0]!), first.lines.findIndex((l) => l.type === "change" && (l.new as { id: number }).id === 2))
      first.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => first.exited), 0)
      // the next run is not a crash loop: it goes on with the new incarnation, without announcing it again
      const second = yield* start(args)
      yield* pg.query("INSERT INTO items VALUES (3, 'next run')")
      yield* until(() => (ids(second).includes(3) ? true : undefined), 20_000, "row 3")
      assert.strictEqual(second.child.exitCode, null, second.stderr())
      assert.deepStrictEqual(second.lines.filter((l) => l.type === "resync"), [])
      assert.deepStrictEqual(yield* pg.query("SELECT slot_name, state FROM slotkeeper.slots ORDER BY incarnation"), [
        { slot_name: "slotkeeper_default_1", state: "retired" },
        { slot_name: "slotkeeper_default_2", state: "active" }
      ])
    }))

  it.live("a reader that goes away (slotkeeper run | head -1): exit 1 with the explanation, through the finalizers; the unread rows come again", () =>
    Effect.gen(function*() {
      const { pg, args, first } = yield* streamingOneRow
      first.child.stdout!.destroy() // the reader is gone: the next write fails with EPIPE
      yield* pg.query("INSERT INTO items VALUES (2, 'y')")
      assert.strictEqual(yield* Effect.promise(() => first.exited), 1)
      const lines = first.stderr().trim().split("\n")
      assert.match(lines.at(-1)!, /^slotkeeper: SinkError: writing to stdout: .*EPIPE/)
      assert.isTrue(lines.some((l) => /ownership of stream default released/.test(l)), first.stderr()) // finalizers ran
      const second = yield* start(args)
      yield* until(() => (ids(second).includes(2) ? true : undefined), 20_000, "row 2 again")
      assert.deepStrictEqual(ids(second), [2])
    }))

  it.live("http sink: batches POSTed as NDJSON, acknowledged only after a 2xx; a 400 exits 1 and the rows come again after the endpoint is fixed", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const endpoint = { status: 503, bodies: [] as Array<string> }
      const server = createServer((req, res) => {
        let body = ""
        req.on("data", (d: Buffer) => (body += d.toString()))
        req.on("end", () => {
          endpoint.bodies.push(body)
          res.writeHead(endpoint.status).end(endpoint.status >= 400 ? "no such route" : "")
        })
      })
      const port = yield* Effect.promise(() => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))))
      yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
      const args = ["--database-url", pg.url, "--table", "items", "--instance-id", "a", "--sink", `http://127.0.0.1:${port}/changes`]
      // the change lines' ids (each batch also carries the table's schema line before its first change on a connection)
      const received = () => endpoint.bodies.flatMap((b) => b.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as { type: string; new: { id: number } }).filter((l) => l.type === "change").map((l) => l.new.id))
      // 503 first: retried with the same batch, nothing acknowledged meanwhile
      const first = yield* start(args)
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'x')")
      yield* until(() => (endpoint.bodies.length >= 2 ? true : undefined), 20_000, "a retried batch")
      assert.deepStrictEqual(received(), [1, 1])
      // then a 400: retrying cannot help, so the process stops with the answer (and the row stays in the slot)
      endpoint.status = 400
      assert.strictEqual(yield* Effect.promise(() => first.exited), 1)
      assert.match(first.stderr(), /400 "no such route".*--on-sink-rejected skip/)
      // fixed: the row comes again, then new ones, each in an NDJSON body
      endpoint.status = 200
      endpoint.bodies.length = 0
      const second = yield* start(args)
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (2, 'y')")
      yield* until(() => (received().includes(2) ? true : undefined), 20_000, "rows after the fix")
      assert.deepStrictEqual(received(), [1, 2])
      second.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => second.exited), 0)
      // acknowledged after the 2xx: a third run repeats nothing
      endpoint.bodies.length = 0
      const third = yield* start(args)
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (3, 'z')")
      yield* until(() => (received().includes(3) ? true : undefined), 20_000, "the next row")
      assert.deepStrictEqual(received(), [3])
      void third
    }))
})

describe("slotkeeper run --config (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("tables with column lists and row filters from a file; the next configuration is the whole set (a table dropped from it leaves the publication)", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE a (id int PRIMARY KEY)")
      yield* pg.query("CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL, secret text)")
      const dir = mkdtempSync(join(tmpdir(), "slotkeeper-config-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const config = join(dir, "slotkeeper.json")
      const published = () =>
        pg.query<{ t: string; cols: string; filter: string | null }>(
          "SELECT tablename AS t, array_to_string(attnames, ',') AS cols, rowfilter AS filter FROM pg_publication_tables WHERE pubname = 'slotkeeper_default' ORDER BY 1"
        )
      // a filter the server refuses for this table (UPDATE and DELETE could not be published): exit 2, nothing created
      writeFileSync(config, JSON.stringify({ instanceId: "a", tables: ["public.a", { table: "public.b", where: "v > 0" }] }))
      const refused = yield* start(["--database-url", pg.url, "--config", config])
      assert.strictEqual(yield* Effect.promise(() => refused.exited), 2)
      assert.match(refused.stderr(), /slotkeeper: --table: subscription "public\.b" .*the row filter uses v, which the replica identity \(id\) does not cover/)
      assert.deepStrictEqual(yield* published(), [])
      writeFileSync(config, JSON.stringify({ instanceId: "a", tables: ["public.a", { table: "public.b", columns: ["id", "v"], where: "id > 1" }] }))
      const first = yield* start(["--database-url", pg.url, "--config", config])
      yield* streaming(pg)
      assert.deepStrictEqual(yield* published(), [{ t: "a", cols: "id", filter: null }, { t: "b", cols: "id,v", filter: "(id > 1)" }])
      yield* pg.query("INSERT INTO b VALUES (1, 5, 'filtered out'), (2, 5, 'hidden')")
      yield* until(() => (ids(first).length >= 1 ? true : undefined), 20_000, "b's row")
      yield* Effect.sleep("300 millis")
      assert.deepStrictEqual(first.lines.filter((l) => l.type === "change").map((l) => l.new), [{ id: 2, v: 5 }]) // the filter and the column list apply
      first.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => first.exited), 0)
      // the next configuration: b only, every column and row
      writeFileSync(config, JSON.stringify({ instanceId: "a", tables: ["public.b"] }))
      const second = yield* start(["--database-url", pg.url, "--config", config])
      yield* streaming(pg)
      assert.deepStrictEqual(yield* published(), [{ t: "b", cols: "id,v,secret", filter: null }])
      const saved = yield* pg.query<{ id: string }>("SELECT id FROM slotkeeper.subscriptions WHERE stream_id = 'default'")
      assert.deepStrictEqual(saved.map((r) => r.id), ["public.b"])
      yield* pg.query("INSERT INTO a VALUES (7)")
      yield* pg.query("INSERT INTO b VALUES (3, -1, 'now published')")
      yield* until(() => (ids(second).length >= 1 ? true : undefined), 20_000, "b's row")
      yield* Effect.sleep("300 millis")
      assert.deepStrictEqual(second.lines.filter((l) => l.type === "change").map((l) => l.new), [{ id: 3, v: -1, secret: "now published" }])
    }))
})
