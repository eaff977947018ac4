import { describe, expect, it } from "vitest"
import { Redacted, Result } from "effect"
import { mkdtempSync, writeFileSync, chmodSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as ConnectionSpec from "../src/connection/ConnectionSpec.ts"
import * as ConnectFailure from "../src/connection/ConnectFailure.ts"
import * as Connector from "../src/connection/Connector.ts"

const environment = (env: Record<string, string> = {}): ConnectionSpec.Environment => ({ env, osUser: "alice", home: "/home/alice", socketDir: "/var/run/postgresql" })
const parse = (text: string, env: Record<string, string> = {}) => ConnectionSpec.parse(text, environment(env))
const ok = (text: string, env: Record<string, string> = {}) => {
  const r = parse(text, env)
  if (Result.isFailure(r)) throw new Error(`expected a spec, got: ${r.failure.message}`)
  return r.success
}
const refused = (text: string, env: Record<string, string> = {}) => {
  const r = parse(text, env)
  if (Result.isSuccess(r)) throw new Error(`expected a refusal of ${text}`)
  return r.failure
}

describe("ConnectionSpec: libpq's rules", () => {
  it("reads a URL's parts and parameters, percent-decoded", () => {
    const s = ok("postgresql://bob:p%40ss@db.example.com:6543/sales?sslmode=verify-full&sslrootcert=/etc/ca.crt&connect_timeout=7")
    expect([s.host, s.port, s.user, s.database, s.sslmode, s.sslrootcert, s.connectTimeoutMs]).toEqual(["db.example.com", 6543, "bob", "sales", "verify-full", "/etc/ca.crt", 7000])
    expect(Redacted.value(s.password!)).toBe("p@ss")
    expect(s.shown).not.toContain("p%40ss")
    expect(s.shown).not.toContain("p@ss")
  })

  it("takes libpq's defaults, and the environment where the string leaves a part out", () => {
    const bare = ok("postgres://")
    expect([bare.host, bare.port, bare.user, bare.database, bare.sslmode]).toEqual(["/var/run/postgresql", 5432, "alice", "alice", "prefer"])
    const env = { PGHOST: "h.env", PGPORT: "5433", PGUSER: "envuser", PGDATABASE: "envdb", PGPASSWORD: "envpw", PGSSLMODE: "require", PGSSLROOTCERT: "/ca.pem" }
    const fromEnv = ok("postgres://", env)
    expect([fromEnv.host, fromEnv.port, fromEnv.user, fromEnv.database, fromEnv.sslmode, fromEnv.sslrootcert]).toEqual(["h.env", 5433, "envuser", "envdb", "require", "/ca.pem"])
    expect(Redacted.value(fromEnv.password!)).toBe("envpw")
    // the string wins over the environment
    const mixed = ok("postgres://u@h.url/db?sslmode=disable", env)
    expect([mixed.host, mixed.port, mixed.user, mixed.database, mixed.sslmode]).toEqual(["h.url", 5433, "u", "db", "disable"])
    // the environment alone
    expect(ok("", env).host).toBe("h.env")
  })

  it("reads libpq's keyword form, quoted values included", () => {
    const s = ok("host=db port=5439 dbname='my db' user=carol password='it\\'s' sslmode=verify-ca")
    expect([s.host, s.port, s.database, s.user, s.sslmode]).toEqual(["db", 5439, "my db", "carol", "verify-ca"])
    expect(Redacted.value(s.password!)).toBe("it's")
  })

  it("takes a Unix socket folder as the host, bracketed IPv6 addresses, and hostaddr beside a host name", () => {
    expect(ok("postgres://%2Ftmp%2Fsock/db").host).toBe("/tmp/sock")
    expect(ConnectionSpec.isUnixSocket(ok("postgresql:///db?host=/tmp/sock"))).toBe(true)
    const v6 = ok("postgres://[::1]:5444/db")
    expect([v6.host, v6.port]).toEqual(["::1", 5444])
    const pair = ok("postgres://db.internal/x?hostaddr=10.0.0.5")
    expect([pair.host, pair.hostaddr]).toEqual(["db.internal", "10.0.0.5"])
  })

  it("sslrootcert=system means verify-full, and refuses a weaker mode", () => {
    expect(ok("postgres://h/db?sslrootcert=system").sslmode).toBe("verify-full")
    expect(refused("postgres://h/db?sslrootcert=system&sslmode=require").message).toContain("verify-full")
  })

  it("refuses what it does not understand, naming it and what to write instead", () => {
    expect(refused("postgres://h/db?sslmode=no-verify").message).toContain("sslmode=require")
    expect(refused("postgres://h/db?ssl=true").message).toContain("sslmode=require")
    expect(refused("postgres://h/db?sslmode=verify").message).toContain("disable, allow, prefer, require, verify-ca, verify-full")
    expect(refused("postgres://h/db?application_name=x").parameter).toBe("application_name")
    expect(refused("postgres://h/db?keepalives_idle=5").message).toContain("--loss-deadline")
    expect(refused("postgres://h/db?frobnicate=1").message).toContain("not a connection parameter")
    expect(refused("postgres://h1,h2/db").message).toContain("several hosts")
    expect(refused("postgres://h:99999/db").message).toContain("1..65535")
    expect(refused("postgres://h/db?target_session_attrs=standby").message).toContain("primary")
    expect(refused("mysql://h/db").message).toContain("postgres://")
    expect(refused("postgres://h/db", { PGSSLMODE: "bogus" }).parameter).toBe("PGSSLMODE")
  })

  it("finds a password in a password file as libpq does (wildcards, escapes, first match)", () => {
    const s = ok("postgres://bob@db.example.com:5432/sales")
    const file = ["# comment", "other:5432:*:*:nope", "db.example.com:5432:sales:bob:pa\\:ss", "*:*:*:*:fallback"].join("\n")
    expect(ConnectionSpec.passwordFromFile(s, file)).toBe("pa:ss")
    expect(ConnectionSpec.passwordFromFile(ok("postgres://zed@x/y"), file)).toBe("fallback")
    expect(ConnectionSpec.passwordFromFile(ok("postgres:///y?host=/tmp"), "localhost:*:*:*:sock")).toBe("sock")
  })
})

describe("Connector.check: files named by the string", () => {
  const dir = mkdtempSync(join(tmpdir(), "slotkeeper-spec-"))
  const env = (extra: Record<string, string> = {}): ConnectionSpec.Environment => ({ env: extra, osUser: "alice", home: dir, socketDir: "/tmp" })

  it("verify-ca without a root certificate is refused, with the ways out", () => {
    const r = Connector.check("postgres://h/db?sslmode=verify-full", env())
    expect(Result.isFailure(r) && r.failure.message).toMatch(/root certificate.*sslrootcert=system.*sslmode=require/)
  })

  it("require encrypts without verifying, unless a root certificate is there", () => {
    const r = Connector.check("postgres://h/db?sslmode=require", env())
    expect(Result.isSuccess(r) && r.success.tls !== false && r.success.tls.rejectUnauthorized).toBe(false)
    const ca = join(dir, "ca.crt")
    writeFileSync(ca, "not really a certificate, only read")
    const withCa = Connector.check(`postgres://h/db?sslmode=require&sslrootcert=${ca}`, env())
    expect(Result.isSuccess(withCa) && withCa.success.tls !== false && withCa.success.tls.rejectUnauthorized).toBe(true)
  })

  it("a named file that cannot be read, or a key others may read, is refused", () => {
    expect(Result.isFailure(Connector.check("postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.crt", env()))).toBe(true)
    const cert = join(dir, "client.crt")
    const key = join(dir, "client.key")
    writeFileSync(cert, "cert")
    writeFileSync(key, "key")
    chmodSync(key, 0o644)
    const open = Connector.check(`postgres://h/db?sslmode=require&sslcert=${cert}&sslkey=${key}`, env())
    expect(Result.isFailure(open) && open.failure.message).toContain("chmod 0600")
    chmodSync(key, 0o600)
    expect(Result.isSuccess(Connector.check(`postgres://h/db?sslmode=require&sslcert=${cert}&sslkey=${key}`, env()))).toBe(true)
  })

  it("reads the password file when the string gives no password", () => {
    const pgpass = join(dir, "pgpass")
    writeFileSync(pgpass, "h:5432:db:alice:from-file\n", { mode: 0o600 })
    const r = Connector.check("postgres://h/db?sslmode=disable", env({ PGPASSFILE: pgpass }))
    expect(Result.isSuccess(r) && r.success.password !== undefined && Redacted.value(r.success.password)).toBe("from-file")
  })
})

describe("ConnectFailure: wait, or stop with the fix", () => {
  const err = (code: string, message = "x") => Object.assign(new Error(message), { code })
  it("waits for what may pass", () => {
    for (const e of [err("ECONNREFUSED"), err("ENOTFOUND"), err("57P03", "the database system is starting up"), err("53300"), err("ETIMEDOUT")]) {
      expect(ConnectFailure.classify(e).permanent).toBe(false)
    }
  })
  it("stops for what does not, with what to change", () => {
    const cases: Array<[Error, ConnectFailure.Reason]> = [
      [err("28P01", "password authentication failed for user \"x\""), "Authentication"],
      [err("3D000", "database \"nope\" does not exist"), "DatabaseMissing"],
      [err("28000", "role \"nope\" does not exist"), "RoleMissing"],
      [err("28000", "no pg_hba.conf entry for host \"127.0.0.1\""), "HbaRejected"],
      [err("42501", "permission denied to start WAL sender"), "NoReplicationPrivilege"],
      [err("08P01", "unsupported startup parameter: replication"), "PoolerRejectsReplication"],
      [err("DEPTH_ZERO_SELF_SIGNED_CERT", "self-signed certificate"), "TlsVerification"],
      [err("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames"), "TlsVerification"]
    ]
    for (const [e, reason] of cases) {
      const c = ConnectFailure.classify(new Error("wrapped", { cause: e }))
      expect([c.permanent, c.reason]).toEqual([true, reason])
      expect(c.fix).toBeDefined()
    }
  })
})
