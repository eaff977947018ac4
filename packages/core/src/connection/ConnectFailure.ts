/**
 * ConnectFailure: whether a failed connection may pass — wait and try again — or is bad input that no waiting fixes,
 * and what to change then.
 *
 * A pod started during a primary failover must wait, not crash-loop: a refused or timed-out connection, a name that
 * does not resolve yet, a server starting up, shutting down or full (`57P03`, `57P01`, `57P02`, `53300`) pass. A wrong
 * password, a database or role that does not exist, a role without REPLICATION, a `pg_hba.conf` that rejects the
 * session, a pooler that cannot carry the replication protocol, or a server certificate that does not verify do not:
 * they are `permanent`, and the caller stops at once with `fix` (the CLI exits 2).
 *
 * **Details**: the error is read where the clients put it — `@effect/sql-pg`'s `SqlError` (the server's or the
 * socket's error on `reason.cause`), node-postgres's `DatabaseError`, a socket or TLS error — following `cause` links.
 * Nothing in a message here comes from the URL, so no password can be in one.
 */
import { Schema } from "effect"
import { SqlError } from "effect/sql/SqlError"

/** A connection could not be opened; `permanent`: no waiting fixes it (see `classify`). Never carries a password. */
export class ConnectFailed extends Schema.TaggedError<ConnectFailed>()("ConnectFailed", {
  message: Schema.String,
  permanent: Schema.Boolean,
  reason: Schema.String
}) {}

export type Reason =
  | "Unreachable"
  | "NameNotResolved"
  | "ServerStarting"
  | "TooManyConnections"
  | "Standby"
  | "Authentication"
  | "RoleMissing"
  | "DatabaseMissing"
  | "NoReplicationPrivilege"
  | "HbaRejected"
  | "PoolerRejectsReplication"
  | "TlsVerification"
  | "TlsUnavailable"
  | "Other"

export interface Classified {
  readonly permanent: boolean
  readonly reason: Reason
  /** The failure, in the server's or the socket's words. */
  readonly message: string
  /** What to change (permanent failures). */
  readonly fix: string | undefined
  /** The SQLSTATE or the socket/TLS error code, when there is one. */
  readonly code: string | undefined
}

interface Found {
  readonly message: string
  readonly code: string | undefined
}

/** The innermost error that carries a code (SQLSTATE or errno/TLS code), else the outermost message. */
const find = (error: unknown): Found => {
  let current: unknown = error
  let outer: string | undefined
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (current instanceof SqlError) {
      outer ??= current.message
      current = (current.reason as { readonly cause?: unknown }).cause
      continue
    }
    if (typeof current === "object") {
      const e = current as { readonly message?: unknown; readonly code?: unknown; readonly cause?: unknown }
      const message = typeof e.message === "string" ? e.message : String(current)
      outer ??= message
      if (typeof e.code === "string" && e.code !== "") return { message, code: e.code }
      if (e.cause === undefined) return { message, code: undefined }
      current = e.cause
      continue
    }
    return { message: outer ?? String(current), code: undefined }
  }
  return { message: outer ?? String(error), code: undefined }
}

const transientCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "EPIPE", "ECONNABORTED", "EADDRNOTAVAIL", "ENOENT"])
const dnsCodes = new Set(["ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NODATA", "EAI_NONAME"])
const tlsVerifyCodes = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID", "ERR_TLS_CERT_ALTNAME_INVALID", "CERT_UNTRUSTED",
  "CERT_REJECTED", "CERT_SIGNATURE_FAILURE", "INVALID_CA", "HOSTNAME_MISMATCH"
])

const classified = (permanent: boolean, reason: Reason, found: Found, fix?: string): Classified => ({
  permanent,
  reason,
  message: found.code !== undefined && !found.message.includes(found.code) ? `${found.message} (${found.code})` : found.message,
  fix,
  code: found.code
})

/** Whether `error`, from opening a connection, may pass (see the summary). */
export const classify = (error: unknown): Classified => {
  // already classified where it happened
  if (error instanceof ConnectFailed) return { permanent: error.permanent, reason: error.reason as Reason, message: error.message, fix: undefined, code: undefined }
  const found = find(error)
  const { code, message } = found
  if (code !== undefined && transientCodes.has(code)) return classified(false, "Unreachable", found)
  if (code !== undefined && dnsCodes.has(code)) return classified(false, "NameNotResolved", found)
  if (code === "57P03" || code === "57P01" || code === "57P02") return classified(false, "ServerStarting", found)
  if (code === "53300" || code === "53400") return classified(false, "TooManyConnections", found)
  if (/unsupported startup parameter: replication/i.test(message)) {
    return classified(true, "PoolerRejectsReplication", found,
      "the replication connection goes through a pooler that cannot carry the replication protocol (PgBouncer in " +
        "transaction or statement mode): give the server's direct address for it with --replication-url (SLOTKEEPER_REPLICATION_URL)")
  }
  if (/no password supplied|password must be a (non-empty )?string|no password was provided/i.test(message)) {
    return classified(true, "Authentication", found, "the server asks for a password and none was given: put it in the URL, PGPASSWORD or ~/.pgpass")
  }
  if (code === "28P01") return classified(true, "Authentication", found, "check the role's password (in the URL, PGPASSWORD or ~/.pgpass)")
  if (code === "28000") {
    if (/pg_hba\.conf/i.test(message)) {
      return classified(true, "HbaRejected", found,
        "the server's pg_hba.conf has no entry for this host, role, database and encryption: add one (a replication " +
          "connection of a logical stream is matched by its database name), or change sslmode to what the entry requires")
    }
    if (/role .* does not exist/i.test(message)) return classified(true, "RoleMissing", found, "create the role, or name an existing one in the URL")
    return classified(true, "Authentication", found, "check the role and how it authenticates (password, client certificate)")
  }
  if (code === "3D000") return classified(true, "DatabaseMissing", found, "create the database, or name an existing one in the URL")
  if (code === "42501" && /WAL sender|walsender|replication/i.test(message)) {
    return classified(true, "NoReplicationPrivilege", found, "grant the role replication: ALTER ROLE <role> REPLICATION (or use a role that has it)")
  }
  if (code !== undefined && (tlsVerifyCodes.has(code) || code.startsWith("ERR_TLS_") || code.startsWith("ERR_SSL_"))) {
    return classified(true, "TlsVerification", found,
      "the server's certificate does not verify: give its CA with sslrootcert=/path/ca.crt (verify-ca, verify-full), use the host " +
        "name the certificate was issued for (verify-full), or sslmode=require to encrypt without verifying")
  }
  if (/does not support (TLS|SSL)/i.test(message)) {
    return classified(true, "TlsUnavailable", found, "the server does not offer TLS: enable ssl on the server, or use sslmode=prefer or disable")
  }
  if (code !== undefined && code.startsWith("08")) return classified(false, "Unreachable", found)
  if (/timeout|timed out|Connection terminated|closed the connection|socket hang up|ECONNRESET/i.test(message)) return classified(false, "Unreachable", found)
  return classified(false, "Other", found)
}

/** One line: the failure and, for a permanent one, what to change. */
export const describe = (c: Classified): string => (c.fix === undefined ? c.message : `${c.message}: ${c.fix}`)
