/**
 * Connecting to the PostgreSQL users run (the CLI as a child process, real servers): TLS from a private CA with
 * libpq's sslmode meanings and client certificates, a real PgBouncer in transaction mode with a direct replication
 * URL, and a server that is not up yet (waited for) or refuses for good (exit 2 with the fix).
 */
import { PgBouncer, PgCluster, TlsCertificates } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { cli, freePort, get, ids, judgeHandover, start, streaming, until, untilEffect } from "./cli-helpers.ts"

const password = "Sc0rpion-p4ss"

/** GET on an instance's health server; status 0 until it listens. */
const probe = (port: number, path: string) => get(port, path).pipe(Effect.catchDefect(() => Effect.succeed({ status: 0, body: {} as unknown })))

/** A server with TLS from the test's CA, SCRAM passwords, a REPLICATION role that must encrypt, and a certificate role. */
const tlsServer = Effect.gen(function*() {
  const certs = yield* TlsCertificates.make({ serverNames: ["db.test"], clients: ["certuser"] })
  const pg = yield* PgCluster.make({
    major: 18,
    password,
    files: certs.serverFiles,
    settings: certs.serverSettings,
    hba: [
      "hostnossl all streamer 127.0.0.1/32 reject",
      "hostssl all streamer 127.0.0.1/32 scram-sha-256",
      "hostssl all certuser 127.0.0.1/32 cert"
    ]
  })
  yield* pg.query(`CREATE ROLE streamer LOGIN REPLICATION PASSWORD '${password}'`)
  yield* pg.query("CREATE ROLE certuser LOGIN REPLICATION")
  yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
  for (const role of ["streamer", "certuser"]) {
    yield* pg.query(`GRANT CREATE ON DATABASE postgres TO ${role}`)
    yield* pg.query(`GRANT CREATE ON SCHEMA public TO ${role}`)
  }
  yield* pg.query("ALTER TABLE items OWNER TO streamer")
  yield* pg.query("GRANT streamer TO certuser")
  // the name in the certificate is db.test; 127.0.0.1 is where it listens (libpq's host/hostaddr pair)
  const url = (query: string, user = "streamer") =>
    `postgres://${user}${user === "streamer" ? `:${password}` : ""}@db.test:${pg.port}/postgres?hostaddr=127.0.0.1&${query}`
  return { certs, pg, url }
})

describe("TLS as libpq means it (a server certificate from the test's own CA)", () => {
  it.live("run streams with sslmode=require (no root certificate): every slotkeeper session, the walsender included, encrypted", () =>
    Effect.gen(function*() {
      const { pg, url } = yield* tlsServer
      const port = yield* Effect.promise(freePort)
      const r = yield* start(["--database-url", url("sslmode=require"), "--table", "items", "--http-port", String(port)])
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'over TLS')")
      yield* until(() => (ids(r).includes(1) ? true : undefined), 30_000, "the row delivered")
      const sessions = yield* pg.query<{ application_name: string; backend_type: string; ssl: boolean }>(
        `SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'slotkeeper:%'`
      )
      assert.isTrue(sessions.some((s) => s.backend_type === "walsender"), JSON.stringify(sessions))
      assert.isTrue(sessions.some((s) => s.application_name.endsWith(":guard")), JSON.stringify(sessions))
      assert.isTrue(sessions.some((s) => s.application_name.endsWith(":lock")), JSON.stringify(sessions))
      assert.deepStrictEqual(sessions.filter((s) => !s.ssl), [])
      // /health says which sessions are encrypted (refreshed every 10 s: the first refresh ran at ownership)
      const health = yield* untilEffect(Effect.map(probe(port, "/health"), (h) => {
        const listed = (h.body as { sessions?: Array<{ role: string; encrypted: boolean }> }).sessions ?? []
        return listed.some((s) => s.role === "lock") ? listed : undefined
      }), 30_000, "sessions in /health")
      assert.isTrue(health.every((s) => s.encrypted), JSON.stringify(health))
      // and `status` lists every session of the stream with its encryption (its own is encrypted too)
      const shown = yield* cli("status", "--database-url", url("sslmode=require"))
      assert.strictEqual(shown.code, 0, shown.stderr)
      assert.match(shown.stdout, /^ {2}session +slotkeeper:default:[^ ]+:repl \(pid \d+\): encrypted \(TLSv1\.[23]\)$/m)
      assert.notMatch(shown.stdout, /NOT encrypted/)
      assert.notInclude(r.stderr() + shown.stdout + shown.stderr, password)
    }))

  it.live("check connects with verify-ca, verify-full and a client certificate; verify-full without the root certificate or for another name exits 2", () =>
    Effect.gen(function*() {
      const { certs, url } = yield* tlsServer
      const client = certs.client("certuser")
      const good: Array<[string, string | undefined]> = [
        [`sslmode=verify-ca&sslrootcert=${certs.caFile}`, undefined],
        [`sslmode=verify-full&sslrootcert=${certs.caFile}`, undefined],
        [`sslmode=verify-full&sslrootcert=${certs.caFile}&sslcert=${client.cert}&sslkey=${client.key}`, "certuser"]
      ]
      for (const [query, user] of good) {
        const ok = yield* cli("check", "--database-url", url(query, user), "--table", "items")
        assert.strictEqual(ok.code, 0, `${query}: ${ok.stdout}${ok.stderr}`)
        assert.match(ok.stdout, /^ok +connection: .*encrypted \(TLSv1\.[23]\)$/m)
        assert.match(ok.stdout, /^ok +replication connection: .*encrypted \(TLSv1\.[23]\)$/m)
      }
      // another name than the certificate's
      const wrongHost = yield* cli("check", "--database-url", url(`sslmode=verify-full&sslrootcert=${certs.caFile}`).replace("db.test", "other.test"), "--table", "items")
      assert.strictEqual(wrongHost.code, 2, wrongHost.stdout + wrongHost.stderr)
      assert.match(wrongHost.stderr, /certificate.*sslrootcert|altnames/i)
      // no root certificate: refused before connecting, with the ways out
      const noRoot = yield* cli("check", "--database-url", url("sslmode=verify-full"), "--table", "items")
      assert.strictEqual(noRoot.code, 2, noRoot.stdout + noRoot.stderr)
      assert.match(noRoot.stderr, /--database-url: sslmode=verify-full needs the server's root certificate.*sslrootcert=system.*sslmode=require/)
      // the server's certificate is from a CA nobody trusts by default: the platform's roots refuse it
      const system = yield* cli("check", "--database-url", url("sslrootcert=system"), "--table", "items")
      assert.strictEqual(system.code, 2, system.stdout + system.stderr)
      for (const r of [wrongHost, noRoot, system]) assert.notInclude(r.stderr + r.stdout, password)
    }))

  it.live("run with verify-full and a client certificate streams; run with verify-full for another name exits 2 and never owns", () =>
    Effect.gen(function*() {
      const { certs, pg, url } = yield* tlsServer
      const client = certs.client("certuser")
      const r = yield* start(["--database-url", url(`sslmode=verify-full&sslrootcert=${certs.caFile}&sslcert=${client.cert}&sslkey=${client.key}`, "certuser"), "--table", "items"])
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (2, 'client certificate')")
      yield* until(() => (ids(r).includes(2) ? true : undefined), 30_000, "the row delivered")
      const refused = yield* start(["--database-url", url(`sslmode=verify-full&sslrootcert=${certs.caFile}`).replace("db.test", "other.test"), "--table", "items"])
      assert.strictEqual(yield* Effect.promise(() => refused.exited), 2, refused.stderr())
      assert.match(refused.stderr(), /--database-url: .*(altnames|certificate)/)
      assert.notInclude(refused.stderr(), password)
    }))
})

describe("a transaction pooler (a real PgBouncer) for SQL, the server directly for replication", () => {
  it.live("two lease-mode instances through PgBouncer with --replication-url: rows delivered, SIGKILL of the owner hands over with nothing lost; without it, exit 2 with the fix", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const bouncer = yield* PgBouncer.make(pg)

      // without --replication-url: the pooler refuses the replication protocol, found before competing
      const port0 = yield* Effect.promise(freePort)
      const alone = yield* start(["--database-url", bouncer.url(), "--lock", "lease", "--table", "items", "--http-port", String(port0)])
      const code = yield* Effect.promise(() => alone.exited)
      assert.strictEqual(code, 2, alone.stderr())
      assert.match(alone.stderr(), /--database-url: .*unsupported startup parameter: replication.*--replication-url/)

      const args = (port: number) => ["--database-url", bouncer.url(), "--replication-url", pg.url, "--lock", "lease", "--table", "items", "--http-port", String(port)]
      const [portA, portB] = [yield* Effect.promise(freePort), yield* Effect.promise(freePort)]
      const a = yield* start(args(portA))
      yield* untilEffect(Effect.map(probe(portA, "/health/owner"), (h) => (h.status === 200 ? true : undefined)), 30_000, "a owning")
      const b = yield* start(args(portB))
      yield* untilEffect(Effect.map(probe(portB, "/health"), (h) => ((h.body as { state: string }).state === "waiting" ? true : undefined)), 30_000, "b waiting")
      const written = { next: 1 }
      const writer = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const ok = yield* pg.query(`INSERT INTO items VALUES (${written.next}, 'x') ON CONFLICT DO NOTHING`).pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (ok) written.next++
        yield* Effect.sleep("10 millis")
      })))
      yield* until(() => (ids(a).length >= 30 ? true : undefined), 30_000, "a delivering")
      a.child.kill("SIGKILL")
      yield* Effect.promise(() => a.exited)
      yield* untilEffect(Effect.map(probe(portB, "/health/owner"), (h) => (h.status === 200 ? true : undefined)), 30_000, "b owning")
      const { committed, report } = yield* judgeHandover(pg, a, b, Fiber.interrupt(writer))
      assert.deepStrictEqual({ lost: report.lost, duplicated: report.duplicatedAfterAcknowledgement }, { lost: [], duplicated: [] })
      assert.isAtLeast(committed.length, 60)
      // the SQL sessions went through the pooler, the walsender did not
      assert.notInclude(b.stderr(), "unsupported startup parameter")
    }))
})

describe("start-up: a server not up yet is waited for; one that refuses for good is bad input", () => {
  it.live("run started 20 s before its server waits (starting, with the reason), then streams; exit 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.stop
      const port = yield* Effect.promise(freePort)
      const r = yield* start(["--database-url", pg.url, "--table", "items", "--http-port", String(port)])
      // the health server answers from the start (before the database is reached)
      const waiting = yield* untilEffect(Effect.map(probe(port, "/health"), (h) => {
        const body = h?.body as { state?: string; waiting_for_server?: string } | undefined
        return body?.waiting_for_server !== undefined ? { status: h!.status, body } : undefined
      }), 15_000, "/health saying it waits")
      assert.strictEqual(waiting.status, 200)
      assert.strictEqual(waiting.body.state, "starting")
      assert.match(waiting.body.waiting_for_server!, /ECONNREFUSED/)
      yield* Effect.sleep("20 seconds")
      assert.strictEqual(r.child.exitCode, null, r.stderr())
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/metrics`).then((m) => m.text()))
      assert.match(metrics, /slotkeeper_startup_attempts_total\{[^}]*stream="default"[^}]*\} ([1-9]\d*)/)
      assert.match(r.stderr(), /waiting for the server \(attempt 1\)/)
      yield* pg.start
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'after the wait')")
      yield* until(() => (ids(r).includes(1) ? true : undefined), 30_000, "the row delivered")
      r.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => r.exited), 0, r.stderr())
    }))

  it.live("a wrong password, a missing database, a role without REPLICATION: exit 2 within 5 s with the fix, the password never shown", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18, password })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query(`CREATE ROLE plain LOGIN PASSWORD '${password}'`)
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO plain")
      const cases: Array<[string, RegExp]> = [
        [pg.urlWith({ password: "Wr0ng-s3cret" }), /--database-url: .*password authentication failed.*check the role's password/],
        [pg.urlWith({ database: "nowhere" }), /--database-url: .*database "nowhere" does not exist.*create the database/],
        [pg.urlWith({ user: "plain", password }), /--database-url: .*lacks REPLICATION.*ALTER ROLE "plain" REPLICATION/]
      ]
      for (const [url, message] of cases) {
        const began = Date.now()
        const r = yield* start(["--database-url", url, "--table", "items"])
        const code = yield* Effect.promise(() => r.exited)
        assert.strictEqual(code, 2, r.stderr())
        assert.isBelow(Date.now() - began, 5_000)
        assert.match(r.stderr(), message)
        assert.notInclude(r.stderr(), password)
        assert.notInclude(r.stderr(), "Wr0ng-s3cret")
      }
      // --startup-timeout 0 keeps the old fail-fast for an unreachable server (exit 1: not bad input, a fault)
      const fast = yield* start(["--database-url", `postgres://postgres:${password}@127.0.0.1:1/postgres`, "--table", "items", "--startup-timeout", "0"])
      assert.strictEqual(yield* Effect.promise(() => fast.exited), 1, fast.stderr())
      assert.match(fast.stderr(), /cannot reach the database: .*ECONNREFUSED/)
      assert.notInclude(fast.stderr(), password)
    }))
})
