/**
 * TypeCatalog: the mapping of the types that are not built in — enums, domains, composites, ranges of extensions,
 * and the arrays of all of these — learnt from `pg_type` when a Relation message first names them, so that an array
 * of an enum is a JSON array like any other and a domain maps like its base type (`Values`).
 *
 * **Details**
 * - Looked up once per type and connection, before the relation's first row is mapped (the replication stream waits
 *   for it); a failed lookup fails the stream (it is retried like a lost connection), never a guess.
 * - An array type is one whose element type names it as its array (`typarray`): `int2vector`, `oidvector` and the
 *   geometric types have an element type but print otherwise, and stay text.
 * - The delimiter of an array is its element type's (`;` for `box`).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { Relation } from "./Pgoutput.ts"
import * as Values from "./Values.ts"

export interface TypeCatalog extends Values.Types {
  /**
   * Looks up the types of `relation`'s columns that are neither built in nor known yet, and the names of its columns'
   * types as PostgreSQL writes them (`format_type`, with the type modifier: `numeric(10,2)`) for schema lines.
   */
  readonly learn: (relation: Relation) => Effect.Effect<void, SqlError>
  readonly typeName: (typeOid: number, typeMod: number) => string | undefined
}

interface TypeRow {
  readonly oid: number
  /** `d` domain, `b` base, `e` enum, `c` composite, `r` range, … */
  readonly typtype: string
  readonly base: number
  readonly element: number
  readonly isArray: boolean
  readonly delimiter: string
}

const text: Values.Mapping = { _tag: "Scalar", kind: "text" }

export const make = (sql: SqlClient): TypeCatalog => {
  const known = new Map<number, Values.Mapping>()
  const mapping = (oid: number): Values.Mapping => Values.builtin(oid) ?? known.get(oid) ?? text
  // format_type's names, by type and modifier (bounded: a name is a few bytes, and a connection sees few pairs)
  const names = new Map<string, string>()
  const nameKey = (oid: number, mod: number) => `${oid}:${mod}`

  const learn = (relation: Relation) =>
    Effect.gen(function*() {
      const rows = new Map<number, TypeRow>()
      let wanted = [...new Set(relation.columns.map((c) => c.typeOid))].filter((oid) => Values.builtin(oid) === undefined && !known.has(oid))
      // domains over domains, arrays of domains: follow until every type involved is read
      for (let depth = 0; wanted.length > 0 && depth < 16; depth++) {
        const found = yield* sql.unsafe<{ oid: string; typtype: string; base: string; element: string; is_array: boolean; delimiter: string }>(
          `SELECT t.oid::int8::text AS oid, t.typtype::text AS typtype, t.typbasetype::int8::text AS base, t.typelem::int8::text AS element,
                  (e.typarray IS NOT DISTINCT FROM t.oid AND t.typelem <> 0) AS is_array, coalesce(e.typdelim, t.typdelim)::text AS delimiter
             FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
            WHERE t.oid = ANY($1::oid[])`,
          [wanted.map(String)]
        )
        const next: Array<number> = []
        for (const r of found) {
          const row: TypeRow = { oid: Number(r.oid), typtype: r.typtype, base: Number(r.base), element: Number(r.element), isArray: r.is_array, delimiter: r.delimiter }
          rows.set(row.oid, row)
          const follow = row.typtype === "d" ? row.base : row.isArray ? row.element : 0
          if (follow !== 0 && Values.builtin(follow) === undefined && !known.has(follow) && !rows.has(follow)) next.push(follow)
        }
        wanted = next
      }
      const resolve = (oid: number, depth: number): Values.Mapping => {
        const b = Values.builtin(oid) ?? known.get(oid)
        if (b !== undefined) return b
        const row = rows.get(oid)
        if (row === undefined || depth > 16) return text
        const m: Values.Mapping = row.typtype === "d"
          ? resolve(row.base, depth + 1)
          : row.isArray
          ? { _tag: "Array", element: resolve(row.element, depth + 1), delimiter: row.delimiter }
          : text
        known.set(oid, m)
        return m
      }
      for (const oid of rows.keys()) resolve(oid, 0)
      const unnamed = relation.columns.filter((c) => !names.has(nameKey(c.typeOid, c.typeMod)))
      if (unnamed.length > 0) {
        const found = yield* sql.unsafe<{ oid: string; mod: number; name: string }>(
          `SELECT t.oid::text AS oid, t.mod, format_type(t.oid::oid, t.mod) AS name FROM unnest($1::int8[], $2::int4[]) AS t(oid, mod)`,
          [unnamed.map((c) => String(c.typeOid)), unnamed.map((c) => c.typeMod)]
        )
        if (names.size > 10_000) names.clear()
        for (const r of found) names.set(nameKey(Number(r.oid), r.mod), r.name)
      }
    })

  return { mapping, learn, typeName: (oid, mod) => names.get(nameKey(oid, mod)) }
}
