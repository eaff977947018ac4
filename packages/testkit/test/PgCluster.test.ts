import { statSync } from "node:fs"
import { PgConnection } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { uidOf } from "@slotkeeper/embedded/internal"
import * as PgCluster from "../src/PgCluster.ts"

describe("PgCluster", () => {
  it.live("starts a logical-replication-ready server, as an unprivileged user when this process is root", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const pid = yield* pg.postmasterPid
      const serverUid = uidOf(pid)
      if (process.getuid?.() === 0) {
        // root: the server must run as another, unprivileged user that owns the data folder
        assert.strictEqual(pg.osUser.kind, "switched")
        assert.notStrictEqual(serverUid, 0)
      } else {
        // the plain path: no user switch, the server is ours
        assert.strictEqual(pg.osUser.kind, "self")
        assert.strictEqual(serverUid, process.getuid?.())
      }
      assert.strictEqual(serverUid, pg.osUser.uid)
      assert.strictEqual(statSync(pg.dataDir).uid, pg.osUser.uid)
      const [row] = yield* pg.query<{ wal_level: string; slots: string; senders: string; listen: string }>(
        `SELECT current_setting('wal_level') AS wal_level, current_setting('max_replication_slots') AS slots,
                current_setting('max_wal_senders') AS senders, current_setting('listen_addresses') AS listen`)
      assert.deepStrictEqual(row, { wal_level: "logical", slots: "20", senders: "20", listen: "127.0.0.1" })
      assert.match(pg.url, /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/)
    }))

  it.live("passes extra settings to the server", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ settings: { wal_sender_timeout: "7s", max_slot_wal_keep_size: "64MB" } })
      const [row] = yield* pg.query<{ a: string; b: string }>(
        "SELECT current_setting('wal_sender_timeout') AS a, current_setting('max_slot_wal_keep_size') AS b")
      assert.deepStrictEqual(row, { a: "7s", b: "64MB" })
    }))

  it.live("crash: SIGKILL of the whole server loses no committed row, and recovery runs", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      yield* pg.query("CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL)")
      // 200 separately committed transactions, then one large one
      for (let i = 1; i <= 200; i++) yield* pg.query("INSERT INTO t VALUES ($1, $2)", [i, `row ${i}`])
      yield* pg.query("INSERT INTO t SELECT g, 'bulk ' || g FROM generate_series(201, 20000) g")
      // an uncommitted transaction at the time of the crash must vanish
      const before = yield* pg.postmasterPid
      yield* Effect.scoped(Effect.gen(function*() {
        const conn = yield* PgConnection.make({ url: Redacted.make(pg.url) })
        yield* conn.query("BEGIN")
        yield* conn.query("INSERT INTO t VALUES (-1, 'uncommitted')")
        yield* pg.crash
      }))
      const after = yield* pg.postmasterPid
      assert.notStrictEqual(after, before)
      const [count] = yield* pg.query<{ n: number; sum: string; uncommitted: number }>(
        "SELECT count(*)::int AS n, sum(id)::text AS sum, count(*) FILTER (WHERE id < 0)::int AS uncommitted FROM t")
      assert.deepStrictEqual(count, { n: 20000, sum: String((20000 * 20001) / 2), uncommitted: 0 })
      // the restart really was a crash recovery, not a clean start
      assert.match(pg.logTail(200), /database system was interrupted|not properly shut down/)
      assert.match(pg.logTail(200), /redo starts at/)
    }))

  it.live("restart keeps port and data; stop and start", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const port = pg.port
      yield* pg.query("CREATE TABLE kept (x int)")
      yield* pg.query("INSERT INTO kept VALUES (42)")
      const pid = yield* pg.postmasterPid
      yield* pg.restart
      assert.notStrictEqual(yield* pg.postmasterPid, pid)
      assert.strictEqual(pg.port, port)
      yield* pg.stop
      assert.isFalse(yield* pg.isRunning)
      const failed = yield* Effect.flip(pg.query("SELECT 1"))
      assert.strictEqual(failed._tag, "PgServerError")
      yield* pg.start
      assert.deepStrictEqual(yield* pg.query("SELECT x FROM kept"), [{ x: 42 }])
      assert.match(pg.logTail(200), /database system was shut down at/)
    }))

  it.live("terminateBackend ends that session and no other", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      const victim = yield* PgConnection.make({ url: Redacted.make(pg.url), applicationName: "victim" })
      const bystander = yield* PgConnection.make({ url: Redacted.make(pg.url), applicationName: "bystander" })
      assert.isTrue(yield* pg.terminateBackend(victim.processId))
      const error = yield* Effect.flip(victim.query("SELECT 1"))
      assert.strictEqual(error._tag, "SqlError")
      assert.deepStrictEqual((yield* bystander.query("SELECT 1 AS one")).rows, [{ one: 1 }])
      assert.isFalse(yield* pg.terminateBackend(victim.processId)) // already gone
    }))

  it.live("setConfig reloads for new sessions, reports settings that need a restart, rejects bad values unchanged", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      assert.deepStrictEqual(yield* pg.setConfig("idle_session_timeout", "3s"), { pendingRestart: false })
      assert.deepStrictEqual(yield* pg.query("SHOW idle_session_timeout"), [{ idle_session_timeout: "3s" }])
      assert.deepStrictEqual(yield* pg.setConfig("max_connections", 50), { pendingRestart: true })
      yield* pg.restart
      assert.deepStrictEqual(yield* pg.query("SHOW max_connections"), [{ max_connections: "50" }])
      const bad = yield* Effect.flip(pg.setConfig("wal_sender_timeout", "not a duration"))
      assert.strictEqual(bad._tag, "PgServerError")
      assert.match(bad.message, /invalid value/)
      const injected = yield* Effect.flip(pg.setConfig("work_mem = '1MB'; DROP TABLE x; --", "1MB"))
      assert.match(injected.message, /unrecognized configuration parameter/)
      assert.deepStrictEqual(yield* pg.setConfig("idle_session_timeout", null), { pendingRestart: false })
      assert.deepStrictEqual(yield* pg.query("SHOW idle_session_timeout"), [{ idle_session_timeout: "0" }])
    }))

  it.live("with a password, TCP needs it and the URL carries it", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ password: "s3cret pa:ss/word" })
      assert.deepStrictEqual(yield* pg.query("SELECT 1 AS one"), [{ one: 1 }])
      const denied = yield* Effect.flip(Effect.scoped(PgConnection.make({
        url: Redacted.make(pg.urlWith({ password: "wrong" })),
        connectTimeout: "5 seconds"
      })))
      assert.strictEqual(denied._tag, "SqlError")
    }))
})
