/**
 * ConnectionSpec: what a connection string means, by libpq's rules — so that a `DATABASE_URL` that works with `psql`
 * reaches the same server, as the same role, with the same TLS requirement, when slotkeeper uses it.
 *
 * Every session slotkeeper opens (the SQL pool, the lock session, the replication connection, the read-only
 * commands) is made from a `ConnectionSpec`, through `Connector`. The spec is decided here, purely, from the text and
 * the environment; reading certificate files and asking the server about TLS is `Connector`'s.
 *
 * **What is read, first wins**: a parameter of the string (URL query parameters after the URL's own parts; in the
 * `key=value` form, a later key over an earlier one), then libpq's environment variable for it (`PGHOST`, `PGPORT`,
 * `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, ... — the
 * table `parameters` below), then libpq's default (a Unix socket, port 5432, the OS user, a database named after the
 * user, `sslmode=prefer`). A password not given is looked up in the password file (`~/.pgpass`, `PGPASSFILE`).
 *
 * **Refused, never ignored**: a parameter libpq does not have, or that slotkeeper cannot honour, is a
 * `ConnectionSpecInvalid` naming it and what to write instead — `ssl=true` and `sslmode=no-verify` (node-postgres
 * dialects: libpq's `sslmode=require` is "encrypt, do not verify"), `application_name` (slotkeeper names every session
 * `slotkeeper:<stream>:<instance>:<role>`), keepalive settings (slotkeeper bounds liveness itself), several hosts,
 * `service`, GSSAPI, CRLs, channel binding `require`.
 *
 * **Details**
 * - TLS (libpq's table): `disable` never; `allow` plain first, TLS if the server refuses plain; `prefer` (the
 *   default) TLS if the server offers it; `require` TLS, the certificate not verified unless a root certificate is
 *   given (or `~/.postgresql/root.crt` exists), then verified as `verify-ca` does; `verify-ca` the chain against
 *   `sslrootcert`; `verify-full` the chain and the host name (`host`, not `hostaddr`). `sslrootcert=system` is the
 *   platform's trusted roots and needs `verify-full` (its default then). TLS is never used over a Unix socket.
 * - `hostaddr` is the address connected to, `host` the name the certificate must carry (libpq's pair).
 * - `connect_timeout` bounds each connection attempt (slotkeeper's own bounds still apply when shorter).
 */
import { Redacted, Result, Schema } from "effect"

export class ConnectionSpecInvalid extends Schema.TaggedError<ConnectionSpecInvalid>()("ConnectionSpecInvalid", {
  /** The parameter (or environment variable) at fault. */
  parameter: Schema.String,
  message: Schema.String
}) {}

export type SslMode = "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
export const sslModes: ReadonlyArray<SslMode> = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

export interface ConnectionSpec {
  /** A host name or address, or a Unix socket folder (it starts with `/`). */
  readonly host: string
  /** The address to connect to when given; `host` is then only the name the server's certificate is checked against. */
  readonly hostaddr: string | undefined
  readonly port: number
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted | undefined
  /** The password file consulted when no password is given (`passfile`, `PGPASSFILE`, else `~/.pgpass`). */
  readonly passfile: string
  readonly sslmode: SslMode
  /** A file, `"system"`, or `undefined`: `~/.postgresql/root.crt` when it exists. */
  readonly sslrootcert: string | undefined
  /** Whether `sslrootcert` was given (then it must exist), rather than libpq's default file. */
  readonly sslrootcertGiven: boolean
  readonly sslcert: string
  readonly sslcertGiven: boolean
  readonly sslkey: string
  readonly sslpassword: Redacted.Redacted | undefined
  /** Send the host name in the TLS handshake (SNI); libpq's `sslsni`, default on. */
  readonly sslsni: boolean
  readonly sslMinProtocolVersion: "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"
  readonly sslMaxProtocolVersion: "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3" | undefined
  /** libpq's `options` (`-c name=value ...`), sent before slotkeeper's own session settings (which win). */
  readonly options: string | undefined
  /** `connect_timeout` in milliseconds; `undefined`: none given (slotkeeper's own bounds apply). */
  readonly connectTimeoutMs: number | undefined
  /** The string as it may be shown: no password, no key passphrase. */
  readonly shown: string
}

/** What the defaults are made of: the environment, the OS user, the home folder, the default socket folder. */
export interface Environment {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly osUser: string
  readonly home: string
  /** libpq's compiled-in socket folder: `/var/run/postgresql` on Debian, Ubuntu and Red Hat builds, else `/tmp`. */
  readonly socketDir: string
}

type Key =
  | "host" | "hostaddr" | "port" | "dbname" | "user" | "password" | "passfile" | "connect_timeout" | "options"
  | "sslmode" | "requiressl" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword" | "sslsni"
  | "ssl_min_protocol_version" | "ssl_max_protocol_version" | "target_session_attrs" | "gssencmode" | "channel_binding"
  | "sslnegotiation" | "fallback_application_name"

/** The parameters slotkeeper understands, with libpq's environment variable for each. */
export const parameters: Readonly<Record<Key, string | undefined>> = {
  host: "PGHOST",
  hostaddr: "PGHOSTADDR",
  port: "PGPORT",
  dbname: "PGDATABASE",
  user: "PGUSER",
  password: "PGPASSWORD",
  passfile: "PGPASSFILE",
  connect_timeout: "PGCONNECT_TIMEOUT",
  options: "PGOPTIONS",
  sslmode: "PGSSLMODE",
  requiressl: "PGREQUIRESSL",
  sslrootcert: "PGSSLROOTCERT",
  sslcert: "PGSSLCERT",
  sslkey: "PGSSLKEY",
  sslpassword: undefined,
  sslsni: "PGSSLSNI",
  ssl_min_protocol_version: "PGSSLMINPROTOCOLVERSION",
  ssl_max_protocol_version: "PGSSLMAXPROTOCOLVERSION",
  target_session_attrs: "PGTARGETSESSIONATTRS",
  gssencmode: "PGGSSENCMODE",
  channel_binding: "PGCHANNELBINDING",
  sslnegotiation: "PGSSLNEGOTIATION",
  fallback_application_name: undefined
}

/** Parameters people write that slotkeeper refuses, with what to do instead. */
const refused: Readonly<Record<string, string>> = {
  ssl: "is node-postgres's, not libpq's: write sslmode=require (encrypt), verify-ca or verify-full (verify the server)",
  application_name: "slotkeeper names every session itself (slotkeeper:<stream>:<instance>:<role>, what pg_stat_activity shows): remove it",
  replication: "slotkeeper opens its replication connection itself: remove it (a separate server or pooler for it: --replication-url)",
  keepalives: "slotkeeper bounds liveness itself (--heartbeat-interval, --loss-deadline): remove it",
  keepalives_idle: "slotkeeper bounds liveness itself (--heartbeat-interval, --loss-deadline): remove it",
  keepalives_interval: "slotkeeper bounds liveness itself (--heartbeat-interval, --loss-deadline): remove it",
  keepalives_count: "slotkeeper bounds liveness itself (--heartbeat-interval, --loss-deadline): remove it",
  tcp_user_timeout: "slotkeeper bounds liveness itself (--heartbeat-interval, --loss-deadline): remove it",
  service: "connection service files (pg_service.conf) are not read: write the parameters in the URL",
  servicefile: "connection service files (pg_service.conf) are not read: write the parameters in the URL",
  load_balance_hosts: "one host only: point the URL at the primary (or a name that follows it)",
  krbsrvname: "GSSAPI/Kerberos authentication is not supported: use a password (SCRAM) or a client certificate",
  gsslib: "GSSAPI/Kerberos authentication is not supported: use a password (SCRAM) or a client certificate",
  gssdelegation: "GSSAPI/Kerberos authentication is not supported: use a password (SCRAM) or a client certificate",
  sslcrl: "certificate revocation lists are not checked: remove it (or verify with a root certificate that no longer signs revoked servers)",
  sslcrldir: "certificate revocation lists are not checked: remove it",
  sslcompression: "TLS compression is not supported (and off in every current OpenSSL): remove it",
  sslcertmode: "client certificates are sent when sslcert (or ~/.postgresql/postgresql.crt) is there: remove it",
  require_auth: "not supported: remove it (the server's pg_hba.conf decides the method)",
  min_protocol_version: "not supported: remove it",
  max_protocol_version: "not supported: remove it",
  client_encoding: "slotkeeper's sessions are UTF8 always (SessionSettings): remove it"
}

const shownParameters = new Set(["host", "hostaddr", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslsni", "connect_timeout", "target_session_attrs", "ssl_min_protocol_version", "ssl_max_protocol_version"])

const invalid = (parameter: string, message: string) => new ConnectionSpecInvalid({ parameter, message })

const decode = (text: string, what: string): Result.Result<string, ConnectionSpecInvalid> => {
  try {
    return Result.succeed(decodeURIComponent(text))
  } catch {
    return Result.fail(invalid(what, `${what}: invalid percent-encoding in the URL`))
  }
}

/** The `key=value` pairs of a URL (`postgres://...`) or of libpq's keyword form (`host=... dbname=...`). */
const pairsOf = (text: string): Result.Result<ReadonlyArray<readonly [string, string]>, ConnectionSpecInvalid> => {
  const trimmed = text.trim()
  if (/^postgres(ql)?:\/\//i.test(trimmed)) return urlPairs(trimmed)
  if (/^[a-z][a-z0-9+.-]*:/i.test(trimmed) && !trimmed.includes("=")) {
    return Result.fail(invalid("url", `must be a postgres:// or postgresql:// URL (or libpq's "host=... dbname=..." form), not ${trimmed.split(":")[0]}:...`))
  }
  if (trimmed === "") return Result.succeed([])
  if (!trimmed.includes("=")) return Result.fail(invalid("url", "is not a connection string: write postgres://user:password@host:5432/database"))
  return keywordPairs(trimmed)
}

const urlPairs = (text: string): Result.Result<ReadonlyArray<readonly [string, string]>, ConnectionSpecInvalid> => {
  const match = /^postgres(?:ql)?:\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i.exec(text)
  if (match === null) return Result.fail(invalid("url", "is not a URL: write postgres://user:password@host:5432/database"))
  const [, authority = "", path, query] = match
  const pairs: Array<readonly [string, string]> = []
  const at = authority.lastIndexOf("@")
  const userinfo = at >= 0 ? authority.slice(0, at) : undefined
  const hostspec = at >= 0 ? authority.slice(at + 1) : authority
  if (userinfo !== undefined && userinfo !== "") {
    const colon = userinfo.indexOf(":")
    const user = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, "user")
    if (Result.isFailure(user)) return Result.fail(user.failure)
    if (user.success !== "") pairs.push(["user", user.success])
    if (colon >= 0) {
      const password = decode(userinfo.slice(colon + 1), "password")
      if (Result.isFailure(password)) return Result.fail(password.failure)
      pairs.push(["password", password.success])
    }
  }
  if (hostspec.includes(",")) {
    return Result.fail(invalid("host", "several hosts are not supported: give the primary's address (or a name that always points at the primary)"))
  }
  if (hostspec !== "") {
    const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(hostspec)
    const [host, port] = bracketed !== null
      ? [bracketed[1]!, bracketed[2]]
      : hostspec.includes(":") ? [hostspec.slice(0, hostspec.lastIndexOf(":")), hostspec.slice(hostspec.lastIndexOf(":") + 1)] : [hostspec, undefined]
    const decodedHost = decode(host, "host")
    if (Result.isFailure(decodedHost)) return Result.fail(decodedHost.failure)
    if (decodedHost.success !== "") pairs.push(["host", decodedHost.success])
    if (port !== undefined && port !== "") pairs.push(["port", port])
  }
  if (path !== undefined && path.length > 1) {
    const database = decode(path.slice(1), "dbname")
    if (Result.isFailure(database)) return Result.fail(database.failure)
    pairs.push(["dbname", database.success])
  }
  if (query !== undefined) {
    for (const part of query.slice(1).split("&")) {
      if (part === "") continue
      const eq = part.indexOf("=")
      if (eq < 0) return Result.fail(invalid(part, `${part}: a URL parameter needs a value (${part}=...)`))
      const key = decode(part.slice(0, eq), "url")
      const value = decode(part.slice(eq + 1), part.slice(0, eq))
      if (Result.isFailure(key)) return Result.fail(key.failure)
      if (Result.isFailure(value)) return Result.fail(value.failure)
      pairs.push([key.success, value.success])
    }
  }
  return Result.succeed(pairs)
}

/** libpq's keyword form: `key = value` pairs, a value in single quotes when it has spaces (`\'` and `\\` inside). */
const keywordPairs = (text: string): Result.Result<ReadonlyArray<readonly [string, string]>, ConnectionSpecInvalid> => {
  const pairs: Array<readonly [string, string]> = []
  let i = 0
  const skip = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++
  }
  while (true) {
    skip()
    if (i >= text.length) return Result.succeed(pairs)
    const keyStart = i
    while (i < text.length && text[i] !== "=" && !/\s/.test(text[i]!)) i++
    const key = text.slice(keyStart, i)
    skip()
    if (text[i] !== "=") return Result.fail(invalid(key, `"${key}" is missing "=" in the connection string`))
    i++
    skip()
    let value = ""
    if (text[i] === "'") {
      i++
      for (;;) {
        if (i >= text.length) return Result.fail(invalid(key, `${key}: unterminated quoted value in the connection string`))
        const c = text[i]!
        if (c === "\\" && i + 1 < text.length) {
          value += text[i + 1]
          i += 2
        } else if (c === "'") {
          i++
          break
        } else {
          value += c
          i++
        }
      }
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) {
        if (text[i] === "\\" && i + 1 < text.length) i++
        value += text[i]
        i++
      }
    }
    pairs.push([key, value])
  }
}

const protocolVersions = { tlsv1: "TLSv1", "tlsv1.1": "TLSv1.1", "tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3" } as const

/**
 * The spec of `text` (a URL or libpq's keyword form; `""` for the environment alone) in `environment`, or why it is
 * not one. Pure: nothing is read but what `environment` holds.
 */
export const parse = (text: string, environment: Environment): Result.Result<ConnectionSpec, ConnectionSpecInvalid> => {
  const pairs = pairsOf(text)
  if (Result.isFailure(pairs)) return Result.fail(pairs.failure)
  const given = new Map<Key, string>()
  for (const [key, value] of pairs.success) {
    if (Object.hasOwn(parameters, key)) given.set(key as Key, value)
    else if (Object.hasOwn(refused, key)) return Result.fail(invalid(key, `${key}: ${refused[key]}`))
    else return Result.fail(invalid(key, `${key}: not a connection parameter slotkeeper understands (libpq's: ${Object.keys(parameters).join(", ")})`))
  }
  // where a value came from, for messages: the parameter or its environment variable
  const source = new Map<Key, string>()
  const value = (key: Key): string | undefined => {
    const own = given.get(key)
    if (own !== undefined) {
      source.set(key, key)
      return own
    }
    const variable = parameters[key]
    const fromEnv = variable === undefined ? undefined : environment.env[variable]
    if (fromEnv !== undefined && fromEnv !== "") {
      source.set(key, variable!)
      return fromEnv
    }
    return undefined
  }
  const named = (key: Key) => source.get(key) ?? key
  const oneOf = <A extends string>(key: Key, allowed: ReadonlyArray<A>, advice: string): Result.Result<A | undefined, ConnectionSpecInvalid> => {
    const v = value(key)
    if (v === undefined || (allowed as ReadonlyArray<string>).includes(v)) return Result.succeed(v as A | undefined)
    return Result.fail(invalid(named(key), `${named(key)}=${v}: ${advice}`))
  }

  const host = value("host")
  if (host !== undefined && host.includes(",")) {
    return Result.fail(invalid(named("host"), `${named("host")}: several hosts are not supported: give the primary's address (or a name that always points at the primary)`))
  }
  const hostaddr = value("hostaddr")
  if (hostaddr !== undefined && hostaddr.includes(",")) return Result.fail(invalid(named("hostaddr"), `${named("hostaddr")}: several addresses are not supported: give one`))
  const portText = value("port") ?? "5432"
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) return Result.fail(invalid(named("port"), `${named("port")}=${portText}: not a TCP port: use 1..65535`))
  const user = value("user") ?? environment.osUser
  const database = value("dbname") ?? user
  const password = value("password")

  const sslmodeText = value("sslmode")
  if (sslmodeText !== undefined && !(sslModes as ReadonlyArray<string>).includes(sslmodeText)) {
    const hint = sslmodeText === "no-verify"
      ? "node-postgres's, not libpq's: for encryption without verification write sslmode=require"
      : `not an sslmode: use ${sslModes.join(", ")}`
    return Result.fail(invalid(named("sslmode"), `${named("sslmode")}=${sslmodeText}: ${hint}`))
  }
  const requiressl = oneOf("requiressl", ["0", "1"], "use 1 (or sslmode=require) or 0")
  if (Result.isFailure(requiressl)) return Result.fail(requiressl.failure)
  const sslrootcertText = value("sslrootcert")
  const system = sslrootcertText === "system"
  const sslmode: SslMode = (sslmodeText as SslMode | undefined) ?? (requiressl.success === "1" ? "require" : system ? "verify-full" : "prefer")
  if (system && sslmode !== "verify-full") {
    return Result.fail(invalid(named("sslmode"), `${named("sslmode")}=${sslmode} may not be used with sslrootcert=system: the platform's roots are only safe with the host name checked (sslmode=verify-full)`))
  }
  const sslsni = oneOf("sslsni", ["0", "1"], "use 1 (send the host name) or 0")
  if (Result.isFailure(sslsni)) return Result.fail(sslsni.failure)
  const versions = Object.keys(protocolVersions)
  const minVersionText = value("ssl_min_protocol_version")
  if (minVersionText !== undefined && !versions.includes(minVersionText.toLowerCase())) {
    return Result.fail(invalid(named("ssl_min_protocol_version"), `${named("ssl_min_protocol_version")}=${minVersionText}: use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3`))
  }
  const maxVersionText = value("ssl_max_protocol_version")
  if (maxVersionText !== undefined && !versions.includes(maxVersionText.toLowerCase())) {
    return Result.fail(invalid(named("ssl_max_protocol_version"), `${named("ssl_max_protocol_version")}=${maxVersionText}: use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3`))
  }
  const attrs = oneOf("target_session_attrs", ["any", "read-write", "primary"],
    "slotkeeper needs the primary (it waits while the server is in recovery): use any, read-write or primary, or remove it")
  if (Result.isFailure(attrs)) return Result.fail(attrs.failure)
  const gss = oneOf("gssencmode", ["disable", "prefer", "allow"], "GSSAPI encryption is not supported: use sslmode for encryption, and gssencmode=disable or none")
  if (Result.isFailure(gss)) return Result.fail(gss.failure)
  const binding = oneOf("channel_binding", ["disable", "prefer"], "channel binding is not supported: use channel_binding=prefer or disable, or remove it")
  if (Result.isFailure(binding)) return Result.fail(binding.failure)
  const negotiation = oneOf("sslnegotiation", ["postgres"], "only PostgreSQL's negotiation (an SSLRequest first) is supported: use sslnegotiation=postgres, or remove it")
  if (Result.isFailure(negotiation)) return Result.fail(negotiation.failure)
  const timeoutText = value("connect_timeout")
  let connectTimeoutMs: number | undefined
  if (timeoutText !== undefined) {
    if (!/^-?\d+$/.test(timeoutText.trim())) return Result.fail(invalid(named("connect_timeout"), `${named("connect_timeout")}=${timeoutText}: whole seconds, e.g. 10`))
    const seconds = Number(timeoutText)
    // libpq: 0 or negative is no timeout, 1 is taken as 2
    connectTimeoutMs = seconds <= 0 ? undefined : Math.max(seconds, 2) * 1000
  }
  const home = environment.home
  const postgresDir = `${home}/.postgresql`
  const shownPairs = [...given.entries()].filter(([k]) => shownParameters.has(k) && k !== "host" && k !== "port")
  const shownHost = host ?? hostaddr ?? environment.socketDir
  const shown = `postgres://${encodeURIComponent(user)}@${shownHost.startsWith("/") ? encodeURIComponent(shownHost) : shownHost.includes(":") ? `[${shownHost}]` : shownHost}:${port}/${encodeURIComponent(database)}` +
    (shownPairs.length > 0 ? `?${shownPairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&")}` : "")

  const maxVersion = maxVersionText === undefined ? undefined : protocolVersions[maxVersionText.toLowerCase() as keyof typeof protocolVersions]
  return Result.succeed({
    host: host ?? (hostaddr !== undefined ? hostaddr : environment.socketDir),
    hostaddr,
    port,
    database,
    user,
    password: password === undefined ? undefined : Redacted.make(password),
    passfile: value("passfile") ?? `${home}/.pgpass`,
    sslmode,
    sslrootcert: sslrootcertText ?? `${postgresDir}/root.crt`,
    sslrootcertGiven: sslrootcertText !== undefined,
    sslcert: value("sslcert") ?? `${postgresDir}/postgresql.crt`,
    sslcertGiven: value("sslcert") !== undefined,
    sslkey: value("sslkey") ?? `${postgresDir}/postgresql.key`,
    sslpassword: value("sslpassword") === undefined ? undefined : Redacted.make(value("sslpassword")!),
    sslsni: sslsni.success !== "0",
    sslMinProtocolVersion: minVersionText === undefined ? "TLSv1.2" : protocolVersions[minVersionText.toLowerCase() as keyof typeof protocolVersions],
    sslMaxProtocolVersion: maxVersion,
    options: value("options"),
    connectTimeoutMs,
    shown
  })
}

/** Whether the session goes over a Unix socket (where libpq never uses TLS). */
export const isUnixSocket = (spec: ConnectionSpec): boolean => spec.hostaddr === undefined && spec.host.startsWith("/")

/**
 * The password for `spec` from a password file's text (libpq's `~/.pgpass` format:
 * `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaped); the first line that
 * matches wins. A Unix socket matches `localhost`, as in libpq.
 */
export const passwordFromFile = (spec: ConnectionSpec, text: string): string | undefined => {
  const host = isUnixSocket(spec) ? "localhost" : spec.host
  for (const raw of text.split(/\r?\n/)) {
    if (raw.trim() === "" || raw.startsWith("#")) continue
    const fields: Array<string> = []
    let current = ""
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!
      if (c === "\\" && i + 1 < raw.length) {
        current += raw[++i]
      } else if (c === ":" && fields.length < 4) {
        fields.push(current)
        current = ""
      } else {
        current += c
      }
    }
    fields.push(current)
    if (fields.length < 5) continue
    const [h, p, d, u, password] = fields as [string, string, string, string, string]
    const matches = (pattern: string, actual: string) => pattern === "*" || pattern === actual
    if (matches(h, host) && matches(p, String(spec.port)) && matches(d, spec.database) && matches(u, spec.user)) return password
  }
  return undefined
}
