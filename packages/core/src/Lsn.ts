/**
 * Lsn: PostgreSQL WAL positions (`pg_lsn`, written `X/Y` in hex), as bigint for arithmetic and comparison.
 *
 * A malformed text is a typed error, never a silent 0: positions decide what may be acknowledged and skipped.
 */
import { Schema } from "effect"

export class InvalidLsn extends Schema.TaggedError<InvalidLsn>()("InvalidLsn", { text: Schema.String, message: Schema.String }) {}

export type Lsn = bigint

const pattern = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/

export const parse = (text: string): Lsn | InvalidLsn => {
  const m = pattern.exec(text)
  if (m === null) return new InvalidLsn({ text, message: `${JSON.stringify(text)} is not a WAL position: expected two hex numbers as X/Y, e.g. 0/16B3748` })
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`)
}

/** Parses a position the server reported; throws on a malformed one (a server bug, not user input). */
export const parseUnsafe = (text: string): Lsn => {
  const lsn = parse(text)
  if (typeof lsn !== "bigint") throw new Error(lsn.message)
  return lsn
}

export const format = (lsn: Lsn): string => `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`

export const max = (a: Lsn, b: Lsn): Lsn => (a > b ? a : b)
export const min = (a: Lsn, b: Lsn): Lsn => (a < b ? a : b)
