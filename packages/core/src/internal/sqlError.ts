/**
 * Reading a `SqlError`: what the server said, and whether the session it happened on is gone; and `transaction`, in
 * which a connection that breaks is a `SqlError`, never a defect.
 *
 * sql-pg keeps the server's error (message, SQLSTATE, detail, hint) on `reason.cause`. Connection URLs and passwords
 * are never part of these texts.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"

interface ServerError {
  readonly message: string
  readonly code?: string
  readonly detail?: string
  readonly hint?: string
}

const serverError = (error: SqlError): ServerError | undefined => {
  const cause = (error.reason as { readonly cause?: unknown }).cause
  return cause instanceof Error ? (cause as Error & ServerError) : undefined
}

/** The SQLSTATE the server reported, if it reported one. */
export const sqlState = (error: SqlError): string | undefined => serverError(error)?.code

/** sql-pg's message plus the server's message, SQLSTATE, detail and hint. */
export const describe = (error: SqlError): string => {
  const server = serverError(error)
  if (server === undefined) {
    const cause = (error.reason as { readonly cause?: unknown }).cause
    return cause instanceof Error && cause.message !== "" ? `${error.message}: ${cause.message}` : error.message
  }
  const parts = [server.message]
  if (server.code !== undefined) parts.push(`(SQLSTATE ${server.code})`)
  if (server.detail !== undefined) parts.push(`DETAIL: ${server.detail}`)
  if (server.hint !== undefined) parts.push(`HINT: ${server.hint}`)
  return `${error.message}: ${parts.join(" ")}`
}

/**
 * True when the session is gone: the connection closed, or the server terminated the backend (admin shutdown,
 * pg_terminate_backend, idle_session_timeout) or refused the connection. Session-level state (advisory locks) is gone
 * with it.
 */
export const isSessionGone = (error: SqlError): boolean => {
  if (error.reason._tag === "ConnectionError") return true
  const code = sqlState(error)
  return code !== undefined && (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03" || code === "57P05")
}

/** Faults that may pass: connection problems, a server starting or shutting down, lock or statement timeouts. */
export const isRetryable = (error: SqlError): boolean =>
  isSessionGone(error) || error.reason._tag === "LockTimeoutError" || error.reason._tag === "StatementTimeoutError" ||
  error.reason._tag === "DeadlockError" || error.reason._tag === "SerializationError"

/**
 * `sql.withTransaction(effect)` whose broken connection is a failure, not a defect. When the connection breaks inside a
 * transaction (a server restart, a failover), the statement fails with a `SqlError` and then the ROLLBACK on the same
 * dead connection fails too; Effect's `withTransaction` turns that second failure into a defect (`orDie`), which
 * would end the process with a stack trace instead of being retried like any connection fault. Here such a defect is
 * the `SqlError` it carries again.
 */
export const transaction = <A, E, R>(sql: SqlClient, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  sql.withTransaction(effect).pipe(
    Effect.catchDefect((defect) => (defect instanceof SqlError ? Effect.fail(defect) : Effect.die(defect)))
  )

/** The server's own words (its message, then its detail) without the driver's prefix; `describe` for other errors. */
export const serverText = (error: SqlError): string => {
  const server = serverError(error)
  return server === undefined ? describe(error) : `${server.message}${server.detail !== undefined ? `: ${server.detail}` : ""}`
}
