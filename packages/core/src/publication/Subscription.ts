/**
 * Subscription: what a consumer asks to receive — a table, and optionally a column list and a row filter — and the
 * pure checks of it that need no server.
 *
 * **Untrusted text.** Table, schema and column names are taken as exact names (as they are in the catalog) and are
 * always written into statements quoted by PostgreSQL's rules (`"` doubled inside `"..."`). A row filter is an SQL
 * expression and must be written into a statement as text; before that it is checked here lexically — one balanced
 * expression: parentheses balanced outside string literals and quoted identifiers, no `;`, no comments, no dollar
 * quoting or parameters — so that wrapped as `WHERE (<filter>)` it cannot close the parenthesis and change the
 * statement around it. What it means is then checked by PostgreSQL itself (`Validation`), before it is ever used.
 */
import { Result, Schema } from "effect"

export interface TableRef {
  /** Exact schema name (default `public`). */
  readonly schema?: string
  /** Exact table name. */
  readonly name: string
}

export interface Subscription {
  /** The caller's key for this subscription (adding the same id with the same spec again is a no-op). */
  readonly id: string
  readonly table: TableRef
  /** Exact column names; all columns when omitted. PostgreSQL 15+. */
  readonly columns?: ReadonlyArray<string>
  /** A row filter expression; every row when omitted. PostgreSQL 15+. */
  readonly where?: string
  /**
   * Opt in to `ALTER TABLE ... REPLICA IDENTITY FULL` when the filter or column list is not covered by the table's
   * replica identity (never done silently).
   */
  readonly replicaIdentityFull?: boolean
}

export class SubscriptionInvalid extends Schema.TaggedError<SubscriptionInvalid>()("SubscriptionInvalid", {
  id: Schema.String,
  reason: Schema.Literals([
    "Identifier",
    "Filter",
    "TableMissing",
    "ColumnMissing",
    "VersionTooOld",
    "ReplicaIdentity",
    "Privilege",
    "Conflict"
  ]),
  message: Schema.String
}) {}

/** A subscription after the checks: exact names, sorted unique columns. */
export interface Checked {
  readonly id: string
  readonly schema: string
  readonly name: string
  readonly columns: ReadonlyArray<string> | undefined
  readonly where: string | undefined
  readonly replicaIdentityFull: boolean
}

const maxIdentifierBytes = 63
const maxFilterLength = 4096

/** Quotes an identifier by PostgreSQL's rules. */
export const quoteIdent = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`

export const qualifiedName = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`

const identifierProblem = (what: string, name: string): string | undefined => {
  if (name.length === 0) return `${what} is empty`
  if (name.includes("\u0000")) return `${what} ${JSON.stringify(name)} contains a NUL character`
  if (Buffer.byteLength(name, "utf8") > maxIdentifierBytes) {
    return `${what} ${JSON.stringify(name)} is longer than ${maxIdentifierBytes} bytes: PostgreSQL would truncate it, so it cannot name an existing object`
  }
  return undefined
}

/** The index of the quote that closes the one at `open` (doubled quotes and, with `escapes`, `\x` stay inside). */
const closingQuote = (text: string, open: number, escapes: boolean): number | undefined => {
  const quote = text[open]
  for (let i = open + 1; i < text.length; i++) {
    if (escapes && text[i] === "\\") i++
    else if (text[i] === quote) {
      if (text[i + 1] !== quote) return i
      i++
    }
  }
  return undefined
}

/**
 * Why `filter` is not one balanced SQL expression, or `undefined` when it is. Lexical only: what it means is for
 * PostgreSQL to check.
 */
export const filterProblem = (filter: string, what = "the row filter"): string | undefined => {
  if (filter.trim().length === 0) return `${what} is empty`
  if (filter.length > maxFilterLength) return `${what} is longer than ${maxFilterLength} characters`
  let depth = 0
  let i = 0
  const n = filter.length
  while (i < n) {
    const c = filter[i]!
    const next = filter[i + 1]
    if (c === "\u0000") return `${what} contains a NUL character`
    if (c === "'" || c === "\"") {
      // a string literal (E'...' has backslash escapes) or a quoted identifier; a doubled quote stays inside
      const escapes = c === "'" && i > 0 && /[eE]/.test(filter[i - 1]!) && (i < 2 || !/[A-Za-z0-9_$]/.test(filter[i - 2]!))
      const end = closingQuote(filter, i, escapes)
      if (end === undefined) return `${what} has an unterminated ${c === "'" ? "string literal" : "quoted identifier"}`
      i = end + 1
      continue
    }
    if (c === "-" && next === "-") return `${what} contains a comment (--): write the expression only`
    if (c === "/" && next === "*") return `${what} contains a comment (/* */): write the expression only`
    if (c === ";") return `${what} contains ';': it must be one expression, not statements`
    if (c === "$") {
      const prev = i > 0 ? filter[i - 1]! : ""
      if (!/[A-Za-z0-9_]/.test(prev)) return `${what} contains a parameter or dollar quoting ($): write constants as string literals`
    }
    if (c === "(") depth++
    if (c === ")") {
      depth--
      if (depth < 0) return `${what} closes a parenthesis it did not open`
    }
    i++
  }
  if (depth !== 0) return `${what} leaves a parenthesis open`
  return undefined
}

/** The checks that need no server (see the module comment): the subscription normalized, or why it is refused. */
export const check = (s: Subscription): Result.Result<Checked, SubscriptionInvalid> => {
  const checked = checkUnion(s)
  return checked instanceof SubscriptionInvalid ? Result.fail(checked) : Result.succeed(checked)
}

const checkUnion = (s: Subscription): Checked | SubscriptionInvalid => {
  const invalid = (reason: SubscriptionInvalid["reason"], message: string) =>
    new SubscriptionInvalid({ id: s.id, reason, message: `subscription ${JSON.stringify(s.id)}: ${message}` })
  if (s.id.length === 0 || s.id.length > 200) return invalid("Identifier", "the subscription id must be 1 to 200 characters")
  const schema = s.table.schema ?? "public"
  const problem = identifierProblem("schema name", schema) ?? identifierProblem("table name", s.table.name)
  if (problem !== undefined) return invalid("Identifier", problem)
  let columns: Array<string> | undefined
  if (s.columns !== undefined) {
    if (s.columns.length === 0) return invalid("Identifier", "the column list is empty: omit it to publish all columns")
    for (const column of s.columns) {
      const p = identifierProblem("column name", column)
      if (p !== undefined) return invalid("Identifier", p)
    }
    columns = [...new Set(s.columns)].sort()
  }
  if (s.where !== undefined) {
    const p = filterProblem(s.where)
    if (p !== undefined) return invalid("Filter", `${p} (filter: ${JSON.stringify(s.where)})`)
  }
  return { id: s.id, schema, name: s.table.name, columns, where: s.where?.trim(), replicaIdentityFull: s.replicaIdentityFull ?? false }
}

/** Whether two checked subscriptions ask for the same thing. */
export const sameSpec = (a: Checked, b: Checked): boolean =>
  a.schema === b.schema && a.name === b.name && a.where === b.where && a.replicaIdentityFull === b.replicaIdentityFull &&
  JSON.stringify(a.columns ?? null) === JSON.stringify(b.columns ?? null)
