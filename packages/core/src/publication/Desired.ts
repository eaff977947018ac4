/**
 * Desired: the pure decisions of the publication manager — what the publication must contain, given all live
 * subscriptions, and which statements take the publication from what it is to that.
 *
 * **Desired set.** One entry per table that at least one subscription names (reference counting: a table stays
 * while any subscription needs it). Columns: all if any subscription wants all, else the union. Row filter: none if
 * any subscription has none, else the OR of the distinct filters, each in parentheses (each is one balanced
 * expression, see `Subscription`).
 *
 * **Plan.** Only what differs is touched, so application DDL on unrelated tables is never blocked: tables to drop,
 * tables to add, and tables whose column list or filter changed (dropped and added again in the same transaction,
 * which the walsender sees as one change at its commit). All tables involved are locked first, in sorted order, so
 * two reconciles — or a reconcile and a DDL statement that also sorts — cannot deadlock.
 */
import type { Checked } from "./Subscription.ts"
import { qualifiedName, quoteIdent } from "./Subscription.ts"

export interface TableSpec {
  readonly schema: string
  readonly name: string
  /** Sorted; `undefined` for all columns. */
  readonly columns: ReadonlyArray<string> | undefined
  /** `undefined` for every row. */
  readonly where: string | undefined
}

/** What the publication is now, as the catalog says (filters as PostgreSQL prints them). */
export interface Actual {
  readonly tables: ReadonlyArray<TableSpec>
}

const key = (t: { readonly schema: string; readonly name: string }) => `${t.schema}\u0000${t.name}`
const compare = (a: TableSpec, b: TableSpec) => (a.schema === b.schema ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.schema < b.schema ? -1 : 1)

/** The desired publication for `subscriptions`, sorted by schema and table. */
export const desired = (subscriptions: Iterable<Checked>): ReadonlyArray<TableSpec> => {
  const byTable = new Map<string, Array<Checked>>()
  for (const s of subscriptions) {
    const k = key(s)
    const list = byTable.get(k)
    if (list === undefined) byTable.set(k, [s])
    else list.push(s)
  }
  const specs: Array<TableSpec> = []
  for (const subs of byTable.values()) {
    const first = subs[0]!
    const columns = subs.some((s) => s.columns === undefined) ? undefined : [...new Set(subs.flatMap((s) => s.columns ?? []))].sort()
    const filters = subs.some((s) => s.where === undefined) ? undefined : [...new Set(subs.map((s) => s.where!))].sort()
    const where = filters === undefined ? undefined : filters.length === 1 ? filters[0] : filters.map((f) => `(${f})`).join(" OR ")
    specs.push({ schema: first.schema, name: first.name, columns, where })
  }
  return specs.sort(compare)
}

const sameColumns = (a: ReadonlyArray<string> | undefined, b: ReadonlyArray<string> | undefined) =>
  a === undefined || b === undefined ? a === b : a.length === b.length && a.every((c, i) => c === b[i])

export interface Plan {
  readonly add: ReadonlyArray<TableSpec>
  readonly drop: ReadonlyArray<TableSpec>
  /** Tables whose column list or filter changed: dropped and added back in the same transaction. */
  readonly change: ReadonlyArray<TableSpec>
}

/**
 * What differs. `normalize(where, table)` gives the form PostgreSQL printed for a desired filter on that table, if
 * known; an unknown form counts as different (the filter is applied again, never assumed equal).
 */
export const plan = (actual: Actual, wanted: ReadonlyArray<TableSpec>, normalize: (where: string, table: TableSpec) => string | undefined): Plan => {
  const have = new Map(actual.tables.map((t) => [key(t), t]))
  const want = new Map(wanted.map((t) => [key(t), t]))
  const add: Array<TableSpec> = []
  const change: Array<TableSpec> = []
  for (const w of wanted) {
    const h = have.get(key(w))
    if (h === undefined) add.push(w)
    else {
      const filterSame = w.where === undefined ? h.where === undefined : h.where !== undefined && normalize(w.where, w) === h.where
      if (!filterSame || !sameColumns(w.columns, h.columns)) change.push(w)
    }
  }
  const drop = actual.tables.filter((t) => !want.has(key(t)))
  return { add: add.sort(compare), drop: [...drop].sort(compare), change: change.sort(compare) }
}

export const isEmpty = (p: Plan): boolean => p.add.length === 0 && p.drop.length === 0 && p.change.length === 0

const tableClause = (t: TableSpec): string =>
  `${qualifiedName(t.schema, t.name)}${t.columns === undefined ? "" : ` (${t.columns.map(quoteIdent).join(", ")})`}${t.where === undefined ? "" : ` WHERE (${t.where})`}`

/** The statements of `p` for publication `publication`, lock statement first; empty when nothing differs. */
export const statements = (publication: string, p: Plan): ReadonlyArray<string> => {
  if (isEmpty(p)) return []
  const pub = quoteIdent(publication)
  const touched = [...p.drop, ...p.change, ...p.add].sort(compare)
  const out = [`LOCK TABLE ${touched.map((t) => qualifiedName(t.schema, t.name)).join(", ")} IN SHARE UPDATE EXCLUSIVE MODE`]
  const dropped = [...p.drop, ...p.change].sort(compare)
  if (dropped.length > 0) out.push(`ALTER PUBLICATION ${pub} DROP TABLE ${dropped.map((t) => qualifiedName(t.schema, t.name)).join(", ")}`)
  const added = [...p.change, ...p.add].sort(compare)
  if (added.length > 0) out.push(`ALTER PUBLICATION ${pub} ADD TABLE ${added.map(tableClause).join(", ")}`)
  return out
}

/** The clause for one table, for checking a single subscription with PostgreSQL. */
export const clause = tableClause
