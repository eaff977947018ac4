/**
 * The text of a `SqlError` as a person needs it: sql-pg's own message ("PgConnection: Query failed") plus what the
 * server said (message, SQLSTATE, detail, hint), which sql-pg keeps on `reason.cause`.
 */
import type { SqlError } from "effect/sql/SqlError"

export const sqlErrorText = (error: SqlError): string => {
  const cause = (error.reason as { readonly cause?: unknown }).cause
  if (!(cause instanceof Error)) return error.message
  const server = cause as Error & { readonly code?: string; readonly detail?: string; readonly hint?: string }
  const parts = [server.message]
  if (server.code !== undefined) parts.push(`(SQLSTATE ${server.code})`)
  if (server.detail !== undefined) parts.push(`DETAIL: ${server.detail}`)
  if (server.hint !== undefined) parts.push(`HINT: ${server.hint}`)
  return `${error.message}: ${parts.join(" ")}`
}
