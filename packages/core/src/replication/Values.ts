/**
 * Values: how a column value that pgoutput sends in PostgreSQL's text form becomes a JavaScript value (and a JSON
 * value in a line) — one mapping, chosen so that PostgreSQL's value can be rebuilt exactly from it, the same for every
 * consumer, and independent of the database's and the role's settings.
 *
 * | PostgreSQL type | value | exact because |
 * |---|---|---|
 * | `bool` | `true` / `false` | |
 * | `int2`, `int4`, `oid` | number | they fit a double |
 * | `int8`, `numeric`, `money` | string, as PostgreSQL prints it (`"9223372036854775807"`, `"NaN"`, `"Infinity"`, `"$1,000.00"`) | no rounding through a double |
 * | `float4`, `float8` | number (shortest form that reads back to the same float); `-0` as the JSON number `-0`; `NaN`, `Infinity`, `-Infinity` as those strings | `extra_float_digits` is pinned to 1 |
 * | `json`, `jsonb` | string: PostgreSQL's text, never parsed (duplicate keys, key order, big numbers, `1e400` kept); JSON `null` is the string `"null"`, SQL `NULL` is `null` | |
 * | `timestamptz` | ISO 8601 in UTC with microseconds: `2026-11-21T07:05:00.123456+00:00` | `TimeZone` is pinned to UTC |
 * | `timestamp` | ISO 8601 without offset: `2026-11-21T07:05:00.123456` | |
 * | `date` | ISO 8601: `2026-11-21` | |
 * | years before 1 AD, after 9999 | ISO 8601 expanded years, astronomical numbering: 44 BC is `-0043-03-15`, 1 BC is `0000-…`, `+10000-01-01` | |
 * | `infinity`, `-infinity` (timestamps, dates) | those strings | |
 * | `time`, `timetz`, `interval` | as PostgreSQL prints them with `DateStyle` ISO and `IntervalStyle` postgres (`07:05:00`, `07:05:00+05:53:28`, `1 day 02:03:04`) | both pinned |
 * | `bytea` | hex text `\x0102ff` | `bytea_output` is pinned to hex |
 * | `text`, `varchar`, `bpchar`, `name`, `uuid`, `xml`, network, geometric, range, multirange, bit, tsvector, composite, enum, and any other type | string, as PostgreSQL prints it | |
 * | a domain | as its base type | |
 * | arrays of any of these | JSON arrays (nested for more dimensions), elements mapped like scalars of the element type, `NULL` as `null` | |
 * | an array whose lower bounds are not 1 (`'[0:2]={1,2,3}'`) | `{"lower_bounds": [0], "values": [1, 2, 3]}` | bounds kept |
 * | `NULL` | `null` | |
 *
 * A TOASTed value that an update did not change is not sent by PostgreSQL; it is never faked: the column is left out
 * of the new row and listed in the change's `unchanged`.
 *
 * **Details**
 * - The walsender prints values with its session's settings. Every session slotkeeper opens sets the ones the text
 *   depends on in its startup packet (`SessionSettings`), which takes precedence over `ALTER DATABASE … SET` and
 *   `ALTER ROLE … SET`.
 * - A row is an object keyed by column name; one whose table has a column named `__proto__` or like an array index
 *   (`"1"`) is a null-prototype object (nothing is lost), and `columns` (`rowJson`) gives the table's column order,
 *   which JavaScript's key order does not keep for index-like names.
 * - The mapping of a type comes from its OID: built-in types from the tables below, other types (enums, domains,
 *   composites and the arrays of all of these) from `pg_type`, looked up once per connection (`TypeCatalog`).
 */

export interface BoundedArray {
  /** The lower bound of each dimension (PostgreSQL's default is 1 for all, then a plain array is used instead). */
  readonly lower_bounds: ReadonlyArray<number>
  readonly values: ReadonlyArray<Value>
}

export type Value = null | boolean | number | string | ReadonlyArray<Value> | BoundedArray

export type Row = Record<string, Value>

export type ScalarKind = "text" | "bool" | "int" | "float" | "timestamp" | "timestamptz" | "date"

/** How the text of one type becomes a value. */
export type Mapping =
  | { readonly _tag: "Scalar"; readonly kind: ScalarKind }
  | { readonly _tag: "Array"; readonly element: Mapping; readonly delimiter: string }

const scalarKinds: Record<number, ScalarKind> = {
  16: "bool",
  21: "int",
  23: "int",
  26: "int",
  700: "float",
  701: "float",
  1114: "timestamp",
  1184: "timestamptz",
  1082: "date"
}

/** Built-in array types (PostgreSQL 14–18, `pg_type` OIDs below 10000) and their element types. */
const builtinArrays: Record<number, number> = Object.fromEntries(
  ("143:142,199:114,271:5069,629:628,651:650,719:718,775:774,791:790,1000:16,1001:17,1002:18,1003:19,1005:21,1006:22,1007:23," +
    "1008:24,1009:25,1010:27,1011:28,1012:29,1013:30,1014:1042,1015:1043,1016:20,1017:600,1018:601,1019:602,1020:603,1021:700," +
    "1022:701,1027:604,1028:26,1034:1033,1040:829,1041:869,1115:1114,1182:1082,1183:1083,1185:1184,1187:1186,1231:1700,1263:2275," +
    "1270:1266,1561:1560,1563:1562,2201:1790,2207:2202,2208:2203,2209:2204,2210:2205,2211:2206,2287:2249,2949:2970,2951:2950," +
    "3221:3220,3643:3614,3644:3642,3645:3615,3735:3734,3770:3769,3807:3802,3905:3904,3907:3906,3909:3908,3911:3910,3913:3912," +
    "3927:3926,4073:4072,4090:4089,4097:4096,4192:4191,5039:5038,6150:4451,6151:4532,6152:4533,6153:4534,6155:4535,6157:4536")
    .split(",").map((pair) => pair.split(":").map(Number) as [number, number])
)

const text: Mapping = { _tag: "Scalar", kind: "text" }
const scalars = new Map<ScalarKind, Mapping>((["text", "bool", "int", "float", "timestamp", "timestamptz", "date"] as const).map((k) => [k, { _tag: "Scalar", kind: k }]))

/** The mapping of a built-in type, or `undefined` for a type that is not built in (look it up in `pg_type`). */
export const builtin = (typeOid: number): Mapping | undefined => {
  const kind = scalarKinds[typeOid]
  if (kind !== undefined) return scalars.get(kind)!
  const element = builtinArrays[typeOid]
  if (element !== undefined) return { _tag: "Array", element: builtin(element) ?? text, delimiter: typeOid === 1020 ? ";" : "," }
  return typeOid < 10000 ? text : undefined
}

/** Types by OID: the built-in ones, and others as learnt from `pg_type`. */
export interface Types {
  readonly mapping: (typeOid: number) => Mapping
  /** The type's name as PostgreSQL writes it (`format_type`: `numeric(10,2)`), once learnt; `undefined` if not known. */
  readonly typeName?: ((typeOid: number, typeMod: number) => string | undefined) | undefined
}

/** Only built-in types; any other type is text. */
export const builtinTypes: Types = { mapping: (oid) => builtin(oid) ?? text }

// ---------------------------------------------------------------------------------------------------------------
// scalars

const integer = (t: string): Value => Number.parseInt(t, 10)
const float = (t: string): Value => (t === "NaN" ? Number.NaN : t === "Infinity" ? Number.POSITIVE_INFINITY : t === "-Infinity" ? Number.NEGATIVE_INFINITY : Number(t))
const boolean = (t: string): Value => t === "t" || t === "true"
const same = (t: string): Value => t

/** A year as PostgreSQL prints it (`0044`, with ` BC` or not) as an ISO 8601 year: astronomical, expanded when needed. */
const isoYear = (digits: string, bc: boolean): string => {
  if (!bc) return digits.length > 4 ? `+${digits}` : digits
  const astronomical = 1 - Number.parseInt(digits, 10) // 1 BC is year 0, 44 BC is -43
  return astronomical === 0 ? "0000" : `-${String(-astronomical).padStart(4, "0")}`
}

const dateRe = /^(\d{4,})-(\d{2}-\d{2})( BC)?$/
const timestampRe = /^(\d{4,})-(\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)( BC)?$/
const timestamptzRe = /^(\d{4,})-(\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(?::(\d{2}))?(?::(\d{2}))?( BC)?$/

/** `2026-11-21` -> `2026-11-21`; `0044-03-15 BC` -> `-0043-03-15`; `10000-01-01` -> `+10000-01-01`. */
export const date = (t: string): string => {
  const m = dateRe.exec(t)
  return m === null ? t : `${isoYear(m[1]!, m[3] !== undefined)}-${m[2]}`
}

/** `2026-11-21 07:05:00.123456` -> `2026-11-21T07:05:00.123456` (years as in `date`). */
export const timestamp = (t: string): string => {
  const m = timestampRe.exec(t)
  return m === null ? t : `${isoYear(m[1]!, m[4] !== undefined)}-${m[2]}T${m[3]}`
}

/** `2026-11-21 07:05:00.123456+00` (or `+05:30`, `-08`, `+05:53:28`) -> `2026-11-21T07:05:00.123456+00:00`. */
export const timestamptz = (t: string): string => {
  const m = timestamptzRe.exec(t)
  if (m === null) return t
  return `${isoYear(m[1]!, m[7] !== undefined)}-${m[2]}T${m[3]}${m[4]}:${m[5] ?? "00"}${m[6] !== undefined ? `:${m[6]}` : ""}`
}

const scalarParsers: Record<ScalarKind, (t: string) => Value> = {
  text: same,
  bool: boolean,
  int: integer,
  float,
  timestamp,
  timestamptz,
  date
}

// ---------------------------------------------------------------------------------------------------------------
// arrays

/**
 * Parses PostgreSQL's array text (`{1,2,NULL}`, `{{a,b},{c,d}}`, `{"x,y","q\"uote"}`, `[0:1]={7,8}`); elements through
 * `element`. Lower bounds other than 1 give a `BoundedArray`.
 */
export const parseArray = (t: string, element: (text: string) => Value, delimiter = ","): Value => {
  let i = 0
  let lowerBounds: Array<number> | undefined
  if (t[0] === "[") {
    // dimensions: [lo:hi][lo:hi]=
    const eq = t.indexOf("=")
    lowerBounds = [...t.slice(0, eq).matchAll(/\[(-?\d+):-?\d+\]/g)].map((m) => Number(m[1]))
    i = eq + 1
  }
  const parse = (): Array<Value> => {
    if (t[i] !== "{") throw new Error(`not an array literal: ${t}`)
    i++
    const out: Array<Value> = []
    if (t[i] === "}") {
      i++
      return out
    }
    for (;;) {
      if (t[i] === "{") out.push(parse())
      else if (t[i] === "\"") {
        i++
        let s = ""
        let from = i
        for (;;) {
          const c = t[i]
          if (c === undefined) throw new Error(`unterminated array element: ${t}`)
          if (c === "\"") break
          if (c === "\\") {
            s += t.slice(from, i)
            i++
            from = i
          }
          i++
        }
        s += t.slice(from, i)
        i++
        out.push(element(s))
      } else {
        let end = i
        while (end < t.length && t[end] !== delimiter && t[end] !== "}") end++
        const raw = t.slice(i, end)
        i = end
        out.push(raw === "NULL" ? null : element(raw))
      }
      if (t[i] === delimiter) {
        i++
        continue
      }
      if (t[i] === "}") {
        i++
        return out
      }
      throw new Error(`malformed array literal: ${t}`)
    }
  }
  const values = parse()
  return lowerBounds === undefined || lowerBounds.every((b) => b === 1) ? values : { lower_bounds: lowerBounds, values }
}

/** The function that maps the text of a type with `mapping`. */
export const parser = (mapping: Mapping): (text: string) => Value => {
  if (mapping._tag === "Scalar") return scalarParsers[mapping.kind]
  const element = parser(mapping.element)
  const delimiter = mapping.delimiter
  return (t) => parseArray(t, element, delimiter)
}

/** Whether values of `mapping` may be floats (they then need `valueJson`'s care in JSON). */
export const mayBeFloat = (mapping: Mapping): boolean => mapping._tag === "Scalar" ? mapping.kind === "float" : mayBeFloat(mapping.element)

/** The value of `text`, of type `typeOid`, with built-in types only (others as text). */
export const fromText = (typeOid: number, t: string, types: Types = builtinTypes): Value => parser(types.mapping(typeOid))(t)

// ---------------------------------------------------------------------------------------------------------------
// JSON

const floatJson = (n: number): string =>
  Number.isFinite(n) ? (n === 0 && 1 / n < 0 ? "-0" : String(n)) : n > 0 ? "\"Infinity\"" : n < 0 ? "\"-Infinity\"" : "\"NaN\""

/** A value as JSON text: floats exact (`-0`; `NaN`, `±Infinity` as strings), the rest as `JSON.stringify` writes it. */
export const valueJson = (v: Value): string => {
  if (typeof v === "number") return floatJson(v)
  if (v === null || typeof v !== "object") return JSON.stringify(v)
  if (Array.isArray(v)) {
    let s = "["
    for (let i = 0; i < v.length; i++) s += (i === 0 ? "" : ",") + valueJson(v[i])
    return `${s}]`
  }
  const b = v as BoundedArray
  return `{"lower_bounds":${JSON.stringify(b.lower_bounds)},"values":${valueJson(b.values)}}`
}

/** Whether a column name stays in place and is kept in a plain object (`JSON.stringify`'s key order is the table's). */
export const plainName = (name: string): boolean => name !== "__proto__" && !/^(?:0|[1-9]\d*)$/.test(name)

/** A row as a JSON object, its columns in `columns`' order (the table's), only those present. */
export const rowJson = (row: Row, columns: ReadonlyArray<string>): string => {
  let s = "{"
  let first = true
  for (const name of columns) {
    if (!Object.hasOwn(row, name)) continue
    s += `${first ? "" : ","}${JSON.stringify(name)}:${valueJson(row[name]!)}`
    first = false
  }
  return `${s}}`
}
