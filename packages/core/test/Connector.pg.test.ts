/**
 * Connector against real servers: libpq's sslmode table decided by what the server offers (`prefer`, `allow`), the
 * library's ownership over verified TLS with a client certificate, and SessionSecurity's account of it.
 */
import { PgConnection } from "@effect/sql-pg"
import { PgCluster, TlsCertificates } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Result } from "effect"
import * as ConnectFailure from "../src/connection/ConnectFailure.ts"
import * as Connector from "../src/connection/Connector.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as SessionSecurity from "../src/service/SessionSecurity.ts"

/** Whether a session made by the Connector for `url` is encrypted, by the server's pg_stat_ssl. */
const encrypted = (url: string) =>
  Effect.scoped(Effect.gen(function*() {
    const target = yield* Connector.sqlPg(Redacted.make(url), 5000)
    const conn = yield* PgConnection.make({ ...target, applicationName: "connector-test" })
    const result = yield* conn.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return (result.rows[0] as { ssl: boolean }).ssl
  }))

describe("Connector (real PostgreSQL)", () => {
  it.live("sslmode against a server with TLS: disable plain; prefer (the default) and require encrypted, unverified; allow plain unless pg_hba.conf wants TLS", () =>
    Effect.gen(function*() {
      const certs = yield* TlsCertificates.make({ serverNames: ["db.test"] })
      const pg = yield* PgCluster.make({
        files: certs.serverFiles,
        settings: certs.serverSettings,
        hba: ["hostnossl all tlsonly 127.0.0.1/32 reject", "host all tlsonly 127.0.0.1/32 trust"]
      })
      yield* pg.query("CREATE ROLE tlsonly LOGIN")
      const base = `postgres://postgres@127.0.0.1:${pg.port}/postgres`
      assert.isFalse(yield* encrypted(`${base}?sslmode=disable`))
      assert.isTrue(yield* encrypted(base))
      assert.isTrue(yield* encrypted(`${base}?sslmode=require`))
      assert.isFalse(yield* encrypted(`${base}?sslmode=allow`))
      assert.isTrue(yield* encrypted(`postgres://tlsonly@127.0.0.1:${pg.port}/postgres?sslmode=allow`))
      // with the CA, require verifies the chain (libpq), and that passes
      assert.isTrue(yield* encrypted(`${base}?sslmode=require&sslrootcert=${certs.caFile}`))
      // verify-full checks the name: 127.0.0.1 is not in the certificate
      const wrongName = yield* Effect.flip(encrypted(`${base}?sslmode=verify-full&sslrootcert=${certs.caFile}`))
      const verification = ConnectFailure.classify(wrongName)
      assert.deepStrictEqual([verification.permanent, verification.reason], [true, "TlsVerification"])
    }))

  it.live("prefer against a server without TLS is plain; require is refused for good (TlsUnavailable)", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make()
      assert.isFalse(yield* encrypted(pg.url))
      const refused = yield* Effect.flip(encrypted(`${pg.url}?sslmode=require`))
      const c = ConnectFailure.classify(refused)
      assert.deepStrictEqual([c.permanent, c.reason], [true, "TlsUnavailable"])
    }))

  it.live("the library owns a stream over verify-full with a client certificate; SessionSecurity says its sessions are encrypted", () =>
    Effect.gen(function*() {
      const certs = yield* TlsCertificates.make({ serverNames: ["db.test"], clients: ["app"] })
      const pg = yield* PgCluster.make({ files: certs.serverFiles, settings: certs.serverSettings, hba: ["hostssl all app 127.0.0.1/32 cert"] })
      yield* pg.query("CREATE ROLE app LOGIN REPLICATION")
      yield* pg.query("GRANT CREATE ON DATABASE postgres TO app")
      const client = certs.client("app")
      const url = `postgres://app@db.test:${pg.port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=${certs.caFile}&sslcert=${client.cert}&sslkey=${client.key}`
      assert.isTrue(Result.isSuccess(Connector.check(url)))
      const owned = yield* StreamOwnership.make({ streamId: "orders", instanceId: "a", url: Redacted.make(url) })
      const sessions = yield* SessionSecurity.read(owned.sql, "orders", "a")
      assert.isTrue(sessions.some((s) => s.role === "guard"), JSON.stringify(sessions))
      assert.deepStrictEqual(sessions.filter((s) => !s.encrypted), [])
      assert.match(sessions[0]!.tls ?? "", /^TLSv1\.[23]$/)
    }))
})
