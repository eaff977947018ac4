/**
 * Values: how a column value that pgoutput sends in PostgreSQL's text form becomes a JavaScript value — one mapping,
 * chosen on purpose and the same for every consumer (not whatever a driver's parsers happen to do).
 *
 * | PostgreSQL type | JavaScript |
 * |---|---|
 * | `bool` | `boolean` |
 * | `int2`, `int4`, `oid` | `number` |
 * | `int8`, `numeric`, `money` | `string` (exact: no precision lost) |
 * | `float4`, `float8` | `number` (`NaN`, `Infinity`, `-Infinity` included) |
 * | `json`, `jsonb` | the parsed value |
 * | `timestamptz` | ISO 8601 string with offset, microseconds kept (`2026-11-21T07:05:00.123456+00:00`); `infinity` as is |
 * | `timestamp` | ISO 8601 string without offset (`2026-11-21T07:05:00.123456`) |
 * | `date`, `time`, `timetz`, `interval` | the text PostgreSQL prints (ISO `DateStyle`) |
 * | `bytea` | the hex text PostgreSQL prints (`\x0102ff`) |
 * | `text`, `varchar`, `bpchar`, `name`, `uuid`, `xml`, `inet`, `cidr`, `macaddr`, enums, domains, other types | `string` |
 * | arrays of the types above | arrays (nested for multi-dimensional), elements mapped as above, `NULL` as `null` |
 * | `NULL` | `null` |
 *
 * A TOASTed value that an update did not change is not sent by PostgreSQL; it is never faked: the column is left out
 * of the new row and listed in the change's `unchanged`.
 *
 * The walsender prints values with the session's settings, which slotkeeper's replication connection leaves at the
 * server defaults: ISO `DateStyle`, `extra_float_digits` that round-trips floats.
 */

export type Value = null | boolean | number | string | Value[] | { readonly [key: string]: unknown }

const integer = (text: string) => Number.parseInt(text, 10)
const float = (text: string) => (text === "NaN" ? Number.NaN : text === "Infinity" ? Number.POSITIVE_INFINITY : text === "-Infinity" ? Number.NEGATIVE_INFINITY : Number(text))
const boolean = (text: string) => text === "t" || text === "true"

/** `2026-11-21 07:05:00.123456+00` (or `+05:30`, `-08`) -> `2026-11-21T07:05:00.123456+00:00`. */
export const timestamptz = (text: string): string => {
  if (text === "infinity" || text === "-infinity") return text
  const m = /^(\d{4,}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(?::?(\d{2}))?(?::?(\d{2}))?( BC)?$/.exec(text)
  if (m === null) return text
  const offset = `${m[3]}:${m[4] ?? "00"}${m[5] !== undefined ? `:${m[5]}` : ""}`
  return `${m[6] !== undefined ? "-" : ""}${m[1]}T${m[2]}${offset}`
}

/** `2026-11-21 07:05:00.123456` -> `2026-11-21T07:05:00.123456`. */
export const timestamp = (text: string): string => {
  if (text === "infinity" || text === "-infinity") return text
  const m = /^(\d{4,}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)( BC)?$/.exec(text)
  return m === null ? text : `${m[3] !== undefined ? "-" : ""}${m[1]}T${m[2]}`
}

const scalar: Record<number, (text: string) => Value> = {
  16: boolean,
  20: (t) => t,
  21: integer,
  23: integer,
  26: integer,
  700: float,
  701: float,
  1700: (t) => t,
  114: (t) => JSON.parse(t) as Value,
  3802: (t) => JSON.parse(t) as Value,
  1114: timestamp,
  1184: timestamptz
}

/** Array type OID -> element type OID, for the element types with their own mapping (others' elements stay text). */
const arrayElement: Record<number, number> = {
  1000: 16, 1005: 21, 1007: 23, 1016: 20, 1028: 26, 1021: 700, 1022: 701, 1231: 1700, 199: 114, 3807: 3802, 1115: 1114, 1185: 1184,
  // text-like arrays: elements as strings
  1009: 25, 1015: 1043, 1014: 1042, 1003: 19, 2951: 2950, 1001: 17, 1182: 1082, 1183: 1083, 1270: 1266, 1187: 1186, 1041: 869, 651: 650
}

/** Parses a PostgreSQL array literal (`{1,2,NULL}`, `{{a,b},{c,d}}`, `{"x,y","q\"uote"}`); elements through `element`. */
export const parseArray = (text: string, element: (text: string) => Value): Value => {
  let i = 0
  // an optional dimension prefix: [1:2]={...}
  if (text[0] === "[") i = text.indexOf("=") + 1
  const parse = (): Array<Value> => {
    if (text[i] !== "{") throw new Error(`not an array literal: ${text}`)
    i++
    const out: Array<Value> = []
    if (text[i] === "}") {
      i++
      return out
    }
    for (;;) {
      if (text[i] === "{") out.push(parse())
      else if (text[i] === "\"") {
        i++
        let s = ""
        while (text[i] !== "\"") {
          if (i >= text.length) throw new Error(`unterminated array element: ${text}`)
          if (text[i] === "\\") i++
          s += text[i]
          i++
        }
        i++
        out.push(element(s))
      } else {
        let end = i
        while (text[end] !== "," && text[end] !== "}" && end < text.length) end++
        const raw = text.slice(i, end)
        i = end
        out.push(raw === "NULL" ? null : element(raw))
      }
      if (text[i] === ",") {
        i++
        continue
      }
      if (text[i] === "}") {
        i++
        return out
      }
      throw new Error(`malformed array literal: ${text}`)
    }
  }
  return parse()
}

/** The JavaScript value of `text`, a value of type `typeOid` in PostgreSQL's text form. */
export const fromText = (typeOid: number, text: string): Value => {
  const parse = scalar[typeOid]
  if (parse !== undefined) return parse(text)
  const element = arrayElement[typeOid]
  if (element !== undefined) return parseArray(text, scalar[element] ?? ((t) => t))
  return text
}
