/**
 * Connector: a connection string made into the options of the two PostgreSQL clients slotkeeper uses —
 * `@effect/sql-pg` (the SQL pool, the lock session, the read-only commands) and node-postgres (`pg`, under the
 * replication connection) — with the same server, role, password and TLS for both, as libpq would connect
 * (`ConnectionSpec`).
 *
 * **Guarantees**: a session is encrypted exactly when libpq's `sslmode` says it is, and a certificate is verified
 * exactly when libpq would verify it; a certificate, key or root file that is named but cannot be read, a key that
 * others may read, or `verify-ca`/`verify-full` without a root certificate is a `ConnectionSpecInvalid` before
 * anything connects. The clients' own URL dialects (node-postgres reads `sslmode=require` as "verify") never see the
 * string: only the decided options.
 *
 * **Details**
 * - `prefer` (libpq's default) and `allow` depend on the server, and are decided for each session as libpq does:
 *   `prefer` asks it first (an `SSLRequest` on a socket of its own, closed after the one-byte answer) and `allow`
 *   tries a plain session first. That is one extra connection for each lock session and replication connection
 *   opened, and one for a pool when it is made (its connections then share the answer).
 * - TLS is never used over a Unix socket (libpq's rule).
 * - The user's `options` go before slotkeeper's session settings (`SessionSettings`), which win.
 */
import { readFileSync, statSync } from "node:fs"
import { homedir, userInfo } from "node:os"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { PgConnection } from "@effect/sql-pg"
import { Duration, Effect, Redacted, Result } from "effect"
import type pg from "pg"
import * as SessionSettings from "../SessionSettings.ts"
import * as ConnectFailure from "./ConnectFailure.ts"
import { ConnectFailed } from "./ConnectFailure.ts"
import * as ConnectionSpec from "./ConnectionSpec.ts"

/** A connection could not be opened (see `ConnectFailure` for `permanent`). Never carries a password. */
export { ConnectFailed } from "./ConnectFailure.ts"

/** This process's environment, as libpq reads it. */
export const environment = (): ConnectionSpec.Environment => {
  let osUser = process.env.USER ?? process.env.USERNAME ?? "postgres"
  try {
    osUser = userInfo().username
  } catch {
    // no passwd entry for this uid (a container's arbitrary uid): the environment's name
  }
  let socketDir = "/tmp"
  try {
    if (statSync("/var/run/postgresql").isDirectory()) socketDir = "/var/run/postgresql"
  } catch {
    // not a Debian/Red Hat layout: libpq's upstream default
  }
  return { env: process.env, osUser, home: process.env.HOME ?? homedir(), socketDir }
}

const readable = (path: string): boolean => {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

const readFile = (path: string, parameter: string, what: string): Result.Result<string, ConnectionSpec.ConnectionSpecInvalid> => {
  try {
    return Result.succeed(readFileSync(path, "utf8"))
  } catch (e) {
    return Result.fail(new ConnectionSpec.ConnectionSpecInvalid({ parameter, message: `${parameter}: cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }))
  }
}

export interface Resolved {
  readonly spec: ConnectionSpec.ConnectionSpec
  /** The password given, or from the password file. */
  readonly password: Redacted.Redacted | undefined
  /**
   * The TLS options when the session is to be encrypted (before `prefer`/`allow` are decided: see `tlsFor`), or
   * `false` when it never is.
   */
  readonly tls: Tls.ConnectionOptions | false
}

/**
 * `text` as a spec, with every file it names read and checked (root certificate, client certificate and key, password
 * file): everything about a connection string that can be wrong without a server. What the CLI checks before anything
 * connects.
 */
export const check = (text: string, env: ConnectionSpec.Environment = environment()): Result.Result<Resolved, ConnectionSpec.ConnectionSpecInvalid> => {
  const parsed = ConnectionSpec.parse(text, env)
  if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
  const spec = parsed.success
  let password = spec.password
  if (password === undefined && readable(spec.passfile)) {
    // libpq ignores a password file others may read (with a warning); so does slotkeeper, silently
    const mode = statSync(spec.passfile).mode
    if ((mode & 0o077) === 0) {
      const text = readFile(spec.passfile, "passfile", "password file")
      if (Result.isFailure(text)) return Result.fail(text.failure)
      const found = ConnectionSpec.passwordFromFile(spec, text.success)
      if (found !== undefined) password = Redacted.make(found)
    }
  }
  const tls = tlsOptions(spec)
  if (Result.isFailure(tls)) return Result.fail(tls.failure)
  return Result.succeed({ spec, password, tls: tls.success })
}

/** The TLS options of a session that is encrypted, by libpq's rules; `false` for `disable` and Unix sockets. */
const tlsOptions = (spec: ConnectionSpec.ConnectionSpec): Result.Result<Tls.ConnectionOptions | false, ConnectionSpec.ConnectionSpecInvalid> => {
  if (spec.sslmode === "disable" || ConnectionSpec.isUnixSocket(spec)) return Result.succeed(false)
  const invalid = (parameter: string, message: string) => Result.fail(new ConnectionSpec.ConnectionSpecInvalid({ parameter, message }))
  const verifying = spec.sslmode === "verify-ca" || spec.sslmode === "verify-full"
  let ca: string | undefined
  let verify = verifying
  if (spec.sslrootcert === "system") {
    verify = true // node's bundled roots (or the platform's with --use-system-ca)
  } else if (spec.sslrootcertGiven || readable(spec.sslrootcert!)) {
    const text = readFile(spec.sslrootcert!, "sslrootcert", "root certificate file")
    if (Result.isFailure(text)) return Result.fail(text.failure)
    ca = text.success
    verify = true // libpq: a root certificate makes require (and prefer, allow) verify the chain, as verify-ca does
  } else if (verifying) {
    return invalid("sslrootcert",
      `sslmode=${spec.sslmode} needs the server's root certificate: the file ${spec.sslrootcert} does not exist. Give it with ` +
        `sslrootcert=/path/ca.crt (or PGSSLROOTCERT), use the platform's trusted roots with sslrootcert=system (and ` +
        `verify-full), or sslmode=require to encrypt without verifying`)
  }
  let cert: string | undefined
  let key: string | undefined
  if (spec.sslcertGiven || readable(spec.sslcert)) {
    const certText = readFile(spec.sslcert, "sslcert", "client certificate file")
    if (Result.isFailure(certText)) return Result.fail(certText.failure)
    cert = certText.success
    if (!readable(spec.sslkey)) return invalid("sslkey", `sslkey: the client certificate ${spec.sslcert} needs its private key: the file ${spec.sslkey} does not exist`)
    const stat = statSync(spec.sslkey)
    const uid = typeof process.getuid === "function" ? process.getuid() : -1
    // libpq's rule: a key owned by this user readable by no one else; owned by root, readable by its group at most
    if ((stat.uid === uid && (stat.mode & 0o077) !== 0) || (stat.uid === 0 && uid !== 0 && (stat.mode & 0o037) !== 0)) {
      return invalid("sslkey", `sslkey: the private key file ${spec.sslkey} has group or world access: chmod 0600 ${spec.sslkey}`)
    }
    const keyText = readFile(spec.sslkey, "sslkey", "private key file")
    if (Result.isFailure(keyText)) return Result.fail(keyText.failure)
    key = keyText.success
  }
  const host = spec.host
  const name = Net.isIP(host) === 0 ? host : undefined
  return Result.succeed({
    rejectUnauthorized: verify,
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert, key: key! }),
    ...(spec.sslpassword === undefined ? {} : { passphrase: Redacted.value(spec.sslpassword) }),
    servername: spec.sslsni ? name : undefined,
    minVersion: spec.sslMinProtocolVersion,
    ...(spec.sslMaxProtocolVersion === undefined ? {} : { maxVersion: spec.sslMaxProtocolVersion }),
    // verify-full checks the name (`host`, also when `hostaddr` is what is connected to); below it, the chain only
    checkServerIdentity: spec.sslmode === "verify-full" ? (_: string, c: Tls.PeerCertificate) => Tls.checkServerIdentity(host, c) : () => undefined
  })
}

/** The address connected to: `hostaddr` when given, else `host` (a name, an address or a socket folder). */
const address = (spec: ConnectionSpec.ConnectionSpec): string => spec.hostaddr ?? spec.host

/** Asks the server whether it speaks TLS (an `SSLRequest`, answered `S` or `N`), within `timeoutMs`. */
const offersTls = (spec: ConnectionSpec.ConnectionSpec, timeoutMs: number): Promise<boolean> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect({ host: address(spec), port: spec.port })
    const timer = setTimeout(() => done(new Error(`timeout after ${timeoutMs} ms asking the server about TLS`)), timeoutMs)
    const done = (outcome: Error | boolean) => {
      clearTimeout(timer)
      socket.destroy()
      if (outcome instanceof Error) reject(outcome)
      else resolve(outcome)
    }
    socket.once("connect", () => socket.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])))
    socket.once("data", (chunk) => done(chunk[0] === 0x53 ? true : chunk[0] === 0x4e ? false : new Error("the server answered an SSLRequest with neither S nor N")))
    socket.once("error", (e) => done(e))
    socket.once("close", () => done(new Error("the server closed the connection asking about TLS")))
  })

const failed = (e: unknown): ConnectFailed => {
  const c = ConnectFailure.classify(e)
  return new ConnectFailed({ message: ConnectFailure.describe(c), permanent: c.permanent, reason: c.reason })
}

/**
 * Whether this session is encrypted, and with what: the TLS options, or `false`. `disable`, `require`, `verify-*` are
 * decided by the spec; `prefer` asks the server, `allow` tries a plain session (see Details).
 */
export const tlsFor = (resolved: Resolved, timeoutMs: number): Effect.Effect<Tls.ConnectionOptions | false, ConnectFailed> => {
  const { spec, tls } = resolved
  if (tls === false || (spec.sslmode !== "prefer" && spec.sslmode !== "allow")) return Effect.succeed(tls)
  const ask: Effect.Effect<boolean, ConnectFailed> = spec.sslmode === "prefer"
    ? Effect.tryPromise({ try: () => offersTls(spec, timeoutMs), catch: failed })
    : PgConnection.make({ ...sqlPgBase(resolved, false), applicationName: "slotkeeper:allow", connectTimeout: `${timeoutMs} millis` }).pipe(
      Effect.scoped,
      Effect.as(false),
      // a plain session refused by pg_hba.conf (an entry for encrypted sessions only): encrypt, as libpq's allow does
      Effect.catch((e) => ConnectFailure.classify(e).reason === "HbaRejected" ? Effect.succeed(true) : Effect.fail(failed(e)))
    )
  return Effect.map(ask, (encrypt) => (encrypt ? tls : false))
}

const sqlPgBase = (resolved: Resolved, ssl: Tls.ConnectionOptions | false) => ({
  host: address(resolved.spec),
  port: resolved.spec.port,
  database: resolved.spec.database,
  username: resolved.spec.user,
  ...(resolved.password === undefined ? {} : { password: resolved.password }),
  ssl,
  ...(resolved.spec.options === undefined ? {} : { startupOptions: resolved.spec.options })
})

/**
 * The options of an `@effect/sql-pg` client or connection (`PgClient.layer`, `PgConnection.make`) for `url`: server,
 * role, password, TLS and the user's `options`. Add `applicationName`, `startupParameters` and timeouts.
 * `timeoutMs` bounds asking the server about TLS (`prefer`).
 */
export const sqlPg = (url: Redacted.Redacted, timeoutMs: number): Effect.Effect<ReturnType<typeof sqlPgBase> & { readonly connectTimeout?: Duration.Input }, ConnectionSpec.ConnectionSpecInvalid | ConnectFailed> =>
  Effect.gen(function*() {
    const resolved = yield* Effect.fromResult(check(Redacted.value(url)))
    const ssl = yield* tlsFor(resolved, Math.min(timeoutMs, resolved.spec.connectTimeoutMs ?? timeoutMs))
    return {
      ...sqlPgBase(resolved, ssl),
      ...(resolved.spec.connectTimeoutMs === undefined ? {} : { connectTimeout: Duration.millis(Math.min(resolved.spec.connectTimeoutMs, timeoutMs)) })
    }
  })

/**
 * The configuration of a node-postgres client for `url` (the replication connection's), with slotkeeper's session
 * settings in `options` after the user's. `timeoutMs` bounds asking the server about TLS (`prefer`) and the connection.
 */
export const nodePg = (url: Redacted.Redacted, applicationName: string, timeoutMs: number): Effect.Effect<pg.ClientConfig, ConnectionSpec.ConnectionSpecInvalid | ConnectFailed> =>
  Effect.gen(function*() {
    const resolved = yield* Effect.fromResult(check(Redacted.value(url)))
    const ssl = yield* tlsFor(resolved, Math.min(timeoutMs, resolved.spec.connectTimeoutMs ?? timeoutMs))
    return {
      host: address(resolved.spec),
      port: resolved.spec.port,
      database: resolved.spec.database,
      user: resolved.spec.user,
      // node-postgres reads PGPASSWORD and ~/.pgpass itself when given none: an empty password is what libpq sends
      password: resolved.password === undefined ? "" : Redacted.value(resolved.password),
      ssl,
      options: resolved.spec.options === undefined ? SessionSettings.options : `${resolved.spec.options} ${SessionSettings.options}`,
      application_name: applicationName,
      connectionTimeoutMillis: Math.min(resolved.spec.connectTimeoutMs ?? timeoutMs, timeoutMs)
    }
  })

/** `url` as it may be shown (no password), or a placeholder when it is not a connection string at all. */
export const shown = (url: string): string => {
  const parsed = ConnectionSpec.parse(url, { env: {}, osUser: "(user)", home: "~", socketDir: "(socket)" })
  return Result.isSuccess(parsed) ? parsed.success.shown : "(a connection string that could not be parsed; not shown)"
}
