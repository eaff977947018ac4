/**
 * Rows: a tuple's texts (as pgoutput sent them) become a row — each column mapped by its type (`Values`), in the
 * table's column order, nothing lost.
 *
 * **Details**
 * - A key tuple (an update that changed the key, a delete under the default or index identity) keeps only the key's
 *   columns: PostgreSQL sends the others as NULL placeholders, which are not the row's values.
 * - A column whose TOASTed value did not change is not sent: it is left out of the row and named in `unchanged`.
 * - A table with a column named `__proto__` or like an array index (`"1"`) gets null-prototype rows (an ordinary
 *   object would drop `__proto__`); `columns` gives the table's order (JavaScript lists index-like keys first).
 */
import type { Relation, Tuple } from "./Pgoutput.ts"
import * as Values from "./Values.ts"

/** How the rows of one relation (as one Relation message described it) are built. */
export interface Shape {
  /** The table's columns, in order. */
  readonly columns: ReadonlyArray<string>
  readonly parsers: ReadonlyArray<(text: string) => Values.Value>
  readonly keys: ReadonlyArray<boolean>
  /** Rows are ordinary objects whose key order is the table's (no `__proto__`, no index-like names). */
  readonly plain: boolean
  /** Some column may hold a float (`JSON.stringify` would write `-0` as `0`, `NaN` as `null`). */
  readonly floats: boolean
}

export interface Built {
  readonly row: Values.Row
  readonly unchanged: ReadonlyArray<string>
}

const none: ReadonlyArray<string> = []

export class Rows {
  private readonly shapes = new WeakMap<Relation, Shape>()
  private readonly types: Values.Types

  constructor(types: Values.Types = Values.builtinTypes) {
    this.types = types
  }

  /** A column type's name as PostgreSQL writes it (`numeric(10,2)`), when the types know it. */
  typeName(typeOid: number, typeMod: number): string | undefined {
    return this.types.typeName?.(typeOid, typeMod)
  }

  /** The shape of `relation`'s rows (its types must be known to `types` by now). */
  shape(relation: Relation): Shape {
    let shape = this.shapes.get(relation)
    if (shape === undefined) {
      const mappings = relation.columns.map((c) => this.types.mapping(c.typeOid))
      const columns = relation.columns.map((c) => c.name)
      shape = {
        columns,
        parsers: mappings.map(Values.parser),
        keys: relation.columns.map((c) => c.key),
        plain: columns.every(Values.plainName),
        floats: mappings.some(Values.mayBeFloat)
      }
      this.shapes.set(relation, shape)
    }
    return shape
  }

  /** The row of `tuple` of `relation`; with `keyOnly`, only the key's columns. */
  build(relation: Relation, tuple: Tuple, keyOnly = false): Built {
    return build(this.shape(relation), tuple, keyOnly)
  }
}

/** The row of `tuple`, a tuple of a relation of `shape`; with `keyOnly`, only the key's columns. */
export const build = (shape: Shape, tuple: Tuple, keyOnly = false): Built => {
  const row: Values.Row = shape.plain ? {} : Object.create(null)
  let unchanged: Array<string> | undefined
  for (let i = 0; i < tuple.length; i++) {
    if (keyOnly && !shape.keys[i]) continue
    const text = tuple[i]
    const name = shape.columns[i]!
    if (text === undefined) (unchanged ??= []).push(name)
    else row[name] = text === null ? null : shape.parsers[i]!(text)
  }
  return { row, unchanged: unchanged ?? none }
}
