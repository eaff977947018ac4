/**
 * Pgoutput: decoding of the pgoutput logical replication messages, protocol versions 1 and 2 — every message
 * (Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message) and the in-progress streaming
 * ones of protocol 2 (Stream Start, Stop, Commit, Abort), with column values mapped by `Values`.
 *
 * **Why our own decoder**: pg-logical-replication (which slotkeeper uses for the replication connection) ships a
 * parser for protocol 1 only — it throws on the streaming messages and does not read the transaction id that
 * protocol 2 puts in front of every change inside a streamed block — and it maps values with `pg`'s parsers
 * (timestamps as `Date`, unchanged TOAST values filled from the old row). See
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html.
 *
 * **Details**
 *
 * The decoder keeps the relation cache: a Relation message comes before the first change of a relation in a session
 * and again whenever the relation changed (a column added, dropped, renamed, retyped), so later changes are decoded
 * with the new columns. Inside a streamed block (between Stream Start and Stream Stop) every change message carries
 * the (sub)transaction id it belongs to; such a change is not decoded at once but handed on as its bytes with the
 * relation it names (`streamedChange`): it is spooled until its transaction commits, and decoded then, once
 * (`decodeStreamed`) — the texts of a transaction that aborts are never made.
 *
 * A tuple is kept as the texts PostgreSQL sent, column by column: which JavaScript value each becomes depends on the
 * column's type (`Values`, `Rows`), and a type that is not built in is looked up in `pg_type` before its first row is
 * mapped — which the decoder, running at the socket, cannot wait for.
 */
import { Data } from "effect"
import type { Lsn } from "../Lsn.ts"
import type * as Values from "./Values.ts"

export interface Column {
  readonly name: string
  readonly typeOid: number
  readonly typeMod: number
  /** Part of the replica identity key. */
  readonly key: boolean
}

export interface Relation {
  readonly oid: number
  readonly schema: string
  readonly name: string
  readonly replicaIdentity: "default" | "nothing" | "full" | "index"
  readonly columns: ReadonlyArray<Column>
}

export type Row = Values.Row

/** A decoded Insert, Update or Delete. */
export type Change = Extract<Message, { readonly tag: "insert" | "update" | "delete" }>

/** A tuple's values in PostgreSQL's text form, in column order: `null` for NULL, `undefined` for an unchanged TOASTed value (not sent). */
export type Tuple = ReadonlyArray<string | null | undefined>

export type Message =
  | { readonly tag: "begin"; readonly finalLsn: Lsn; readonly commitTime: string; readonly xid: number }
  | { readonly tag: "commit"; readonly commitLsn: Lsn; readonly endLsn: Lsn; readonly commitTime: string }
  | { readonly tag: "origin"; readonly originLsn: Lsn; readonly name: string }
  | { readonly tag: "relation"; readonly xid: number | undefined; readonly relation: Relation }
  | { readonly tag: "type"; readonly xid: number | undefined; readonly typeOid: number; readonly schema: string; readonly name: string }
  | { readonly tag: "insert"; readonly xid: number | undefined; readonly relation: Relation; readonly new: Tuple }
  | {
    readonly tag: "update"
    readonly xid: number | undefined
    readonly relation: Relation
    /** The old row (REPLICA IDENTITY FULL) or the old key (when the key changed); `undefined` when not sent. */
    readonly old: Tuple | undefined
    readonly oldIsKey: boolean
    readonly new: Tuple
  }
  | { readonly tag: "delete"; readonly xid: number | undefined; readonly relation: Relation; readonly old: Tuple; readonly oldIsKey: boolean }
  | { readonly tag: "truncate"; readonly xid: number | undefined; readonly relations: ReadonlyArray<Relation>; readonly cascade: boolean; readonly restartIdentity: boolean }
  | { readonly tag: "message"; readonly xid: number | undefined; readonly transactional: boolean; readonly lsn: Lsn; readonly prefix: string; readonly content: Uint8Array }
  /**
   * An Insert, Update or Delete inside a streamed block, not decoded yet: it is spooled as it came and decoded at its
   * transaction's commit (`Decoder.decodeStreamed`). `raw` is a view of the socket's buffer, valid only while this
   * message is handled: keep a copy to hold it longer.
   */
  | { readonly tag: "streamedChange"; readonly xid: number; readonly relation: Relation; readonly raw: Buffer }
  | { readonly tag: "streamStart"; readonly xid: number; readonly first: boolean }
  | { readonly tag: "streamStop" }
  | { readonly tag: "streamCommit"; readonly xid: number; readonly commitLsn: Lsn; readonly endLsn: Lsn; readonly commitTime: string }
  | { readonly tag: "streamAbort"; readonly xid: number; readonly subxid: number }

/** A pgoutput message that does not decode (a protocol fault): `ReplicationStream` fails with it as `Protocol`. */
export class DecodeError extends Data.TaggedError("DecodeError")<{ readonly message: string }> {}

const postgresEpochMicros = 946_684_800_000_000n

// the date-and-time part of the last second formatted: consecutive commits mostly share it (a Date per commit was
// 4.5% of the CLI's time with 100,000 one-row transactions)
let cachedSecond: bigint | undefined
let cachedBase = ""

/** A pgoutput timestamp (microseconds since 2000-01-01 UTC) as ISO 8601 with microseconds. */
export const isoTime = (micros: bigint): string => {
  const unixMicros = micros + postgresEpochMicros
  const floor = unixMicros / 1_000_000n
  const second = unixMicros < 0n && floor * 1_000_000n !== unixMicros ? floor - 1n : floor
  if (second !== cachedSecond) {
    cachedSecond = second
    cachedBase = new Date(Number(second) * 1000).toISOString().slice(0, 19)
  }
  return `${cachedBase}.${(unixMicros - second * 1_000_000n).toString().padStart(6, "0")}Z`
}

class Reader {
  private offset = 0
  private readonly buffer: Buffer
  constructor(buffer: Buffer) {
    this.buffer = buffer
  }
  uint8(): number {
    return this.buffer.readUInt8(this.offset++)
  }
  int16(): number {
    const v = this.buffer.readInt16BE(this.offset)
    this.offset += 2
    return v
  }
  int32(): number {
    const v = this.buffer.readInt32BE(this.offset)
    this.offset += 4
    return v
  }
  uint32(): number {
    const v = this.buffer.readUInt32BE(this.offset)
    this.offset += 4
    return v
  }
  uint64(): bigint {
    const v = this.buffer.readBigUInt64BE(this.offset)
    this.offset += 8
    return v
  }
  int64(): bigint {
    const v = this.buffer.readBigInt64BE(this.offset)
    this.offset += 8
    return v
  }
  string(): string {
    const end = this.buffer.indexOf(0, this.offset)
    if (end < 0) throw new DecodeError({ message: "pgoutput: unterminated string" })
    const s = this.buffer.toString("utf8", this.offset, end)
    this.offset = end + 1
    return s
  }
  text(n: number): string {
    if (n < 0 || this.offset + n > this.buffer.length) throw new DecodeError({ message: "pgoutput: message ends early" })
    const s = this.buffer.toString("utf8", this.offset, this.offset + n)
    this.offset += n
    return s
  }
  bytes(n: number): Buffer {
    if (this.offset + n > this.buffer.length) throw new DecodeError({ message: "pgoutput: message ends early" })
    const b = this.buffer.subarray(this.offset, this.offset + n)
    this.offset += n
    return b
  }
}

const identities = { d: "default", n: "nothing", f: "full", i: "index" } as const

export class Decoder {
  private readonly relations = new Map<number, Relation>()
  private inStream = false

  /** Decodes one pgoutput message (the payload of an XLogData message). */
  decode(buffer: Buffer): Message {
    const r = new Reader(buffer)
    const tag = String.fromCharCode(r.uint8())
    // inside a streamed block, these carry the (sub)transaction id first
    const xid = () => (this.inStream ? r.uint32() : undefined)
    switch (tag) {
      case "B":
        return { tag: "begin", finalLsn: r.uint64(), commitTime: isoTime(r.int64()), xid: r.uint32() }
      case "C": {
        r.uint8() // flags, unused
        return { tag: "commit", commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: isoTime(r.int64()) }
      }
      case "O":
        return { tag: "origin", originLsn: r.uint64(), name: r.string() }
      case "R": {
        const x = xid()
        const oid = r.uint32()
        const schema = r.string()
        const name = r.string()
        const ident = String.fromCharCode(r.uint8()) as keyof typeof identities
        const count = r.int16()
        const columns: Array<Column> = []
        for (let i = 0; i < count; i++) {
          const flags = r.uint8()
          columns.push({ key: (flags & 1) === 1, name: r.string(), typeOid: r.uint32(), typeMod: r.int32() })
        }
        const relation: Relation = { oid, schema: schema === "" ? "pg_catalog" : schema, name, replicaIdentity: identities[ident] ?? "default", columns }
        this.relations.set(oid, relation)
        return { tag: "relation", xid: x, relation }
      }
      case "Y": {
        const x = xid()
        return { tag: "type", xid: x, typeOid: r.uint32(), schema: r.string(), name: r.string() }
      }
      case "I":
      case "U":
      case "D": {
        const x = xid()
        const relation = this.relation(r.uint32())
        // inside a streamed block the change is spooled as it came, and decoded once, at its commit
        if (x !== undefined) return { tag: "streamedChange", xid: x, relation, raw: buffer }
        return this.change(r, tag, x, relation)
      }
      case "T": {
        const x = xid()
        const count = r.uint32()
        const flags = r.uint8()
        const relations: Array<Relation> = []
        for (let i = 0; i < count; i++) relations.push(this.relation(r.uint32()))
        return { tag: "truncate", xid: x, relations, cascade: (flags & 1) === 1, restartIdentity: (flags & 2) === 2 }
      }
      case "M": {
        const x = xid()
        const flags = r.uint8()
        const lsn = r.uint64()
        const prefix = r.string()
        const content = Buffer.from(r.bytes(r.uint32()))
        return { tag: "message", xid: x, transactional: (flags & 1) === 1, lsn, prefix, content }
      }
      case "S": {
        this.inStream = true
        return { tag: "streamStart", xid: r.uint32(), first: r.uint8() === 1 }
      }
      case "E":
        this.inStream = false
        return { tag: "streamStop" }
      case "c": {
        const x = r.uint32()
        r.uint8() // flags, unused
        return { tag: "streamCommit", xid: x, commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: isoTime(r.int64()) }
      }
      case "A":
        return { tag: "streamAbort", xid: r.uint32(), subxid: r.uint32() }
      default:
        throw new DecodeError({ message: `pgoutput: unknown message ${JSON.stringify(tag)} (a protocol this decoder does not speak)` })
    }
  }

  /**
   * Decodes a change of a streamed block that was spooled as it came (a `streamedChange`'s `raw`), as a change of
   * `relation` — the relation its Relation message described when the change was received, which a later Relation
   * message may have replaced since.
   */
  decodeStreamed(buffer: Buffer, relation: Relation): Change {
    const r = new Reader(buffer)
    const tag = String.fromCharCode(r.uint8())
    if (tag !== "I" && tag !== "U" && tag !== "D") throw new DecodeError({ message: `pgoutput: a spooled change is a ${JSON.stringify(tag)} message` })
    const x = r.uint32()
    r.uint32() // the relation's oid: `relation` is the one it named then
    return this.change(r, tag, x, relation)
  }

  /** An Insert, Update or Delete message, read past its transaction id and relation. */
  private change(r: Reader, tag: "I" | "U" | "D", x: number | undefined, relation: Relation): Change {
    switch (tag) {
      case "I": {
        this.expect(r, "N")
        return { tag: "insert", xid: x, relation, new: this.tuple(r, relation) }
      }
      case "U": {
        let kind = String.fromCharCode(r.uint8())
        let old: Tuple | undefined
        let oldIsKey = false
        if (kind === "K" || kind === "O") {
          old = this.tuple(r, relation)
          oldIsKey = kind === "K"
          kind = String.fromCharCode(r.uint8())
        }
        if (kind !== "N") throw new DecodeError({ message: `pgoutput: update without a new tuple (${kind})` })
        return { tag: "update", xid: x, relation, old, oldIsKey, new: this.tuple(r, relation) }
      }
      case "D": {
        const kind = String.fromCharCode(r.uint8())
        if (kind !== "K" && kind !== "O") throw new DecodeError({ message: `pgoutput: delete without an old tuple (${kind})` })
        return { tag: "delete", xid: x, relation, old: this.tuple(r, relation), oldIsKey: kind === "K" }
      }
    }
  }

  private expect(r: Reader, kind: string) {
    const got = String.fromCharCode(r.uint8())
    if (got !== kind) throw new DecodeError({ message: `pgoutput: expected tuple ${kind}, got ${got}` })
  }

  private relation(oid: number): Relation {
    const relation = this.relations.get(oid)
    if (relation === undefined) throw new DecodeError({ message: `pgoutput: a change of relation ${oid} before its Relation message` })
    return relation
  }

  /** A tuple's texts (in a key tuple, the columns outside the key are sent as NULL placeholders). */
  private tuple(r: Reader, relation: Relation): Tuple {
    const count = r.int16()
    if (count > relation.columns.length) throw new DecodeError({ message: `pgoutput: tuple of ${relation.schema}.${relation.name} has more columns than its Relation message` })
    const texts: Array<string | null | undefined> = new Array(count)
    for (let i = 0; i < count; i++) {
      const kind = r.uint8()
      if (kind === 0x74 /* t */) texts[i] = r.text(r.int32())
      else if (kind === 0x6e /* n */) texts[i] = null
      else if (kind === 0x75 /* u */) texts[i] = undefined
      else if (kind === 0x62 /* b: binary, never requested */) texts[i] = `\\x${r.bytes(r.int32()).toString("hex")}`
      else throw new DecodeError({ message: `pgoutput: unknown tuple value kind ${JSON.stringify(String.fromCharCode(kind))}` })
    }
    return texts
  }
}

