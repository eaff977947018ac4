/**
 * Assembler: decoded pgoutput messages in, the consumer's events out — whole committed transactions, in commit order,
 * each change numbered by its position inside its transaction, duplicates from before the start position skipped.
 *
 * **Details**
 * - A transaction sent at commit (Begin … Commit) passes straight through.
 * - A transaction streamed while in progress (protocol 2: Stream Start … Stop blocks, possibly interleaved with other
 *   transactions, then Stream Commit or Stream Abort) is spooled to disk (`Spool`) and replayed at its commit as
 *   Begin … Commit. A consumer never sees a change of an aborted or uncommitted transaction, and memory does not
 *   grow with the transaction's size.
 * - A transaction that commits below the start position (`commitLsn < start`) was consumed before: it is skipped
 *   whole — the same rule the server applies, checked here again.
 * - `seq` is a change's position inside its transaction (from 1). A plain LSN is not unique per change; `(commitLsn,
 *   seq)` is, and it is what a partly consumed transaction resumes from.
 * - What is spooled is what PostgreSQL sent: a change's message, byte for byte, tagged with the Relation message that
 *   described it (by number); a truncate or a logical message as a JSON record of fixed shape. A change is decoded
 *   and its values mapped (`Rows`) only when the transaction is replayed — once, and exactly like a change sent at
 *   commit — and nothing in a value can be mistaken for a marker of the spool's own.
 */
import type { Lsn } from "../Lsn.ts"
import { Decoder, type Message, type Relation, type Row, type Tuple } from "./Pgoutput.ts"
import { build, Rows } from "./Rows.ts"
import type { Spool } from "./Spool.ts"
import * as Watermark from "./Watermark.ts"

export interface TableName {
  readonly schema: string
  readonly table: string
}

interface InTransaction {
  readonly xid: number
  readonly commitLsn: Lsn
  readonly commitTime: string
  /** Position inside the transaction, from 1. */
  readonly seq: number
}

export interface ChangeEvent extends TableName, InTransaction {
  readonly _tag: "Change"
  /** `read`: a row as a backfill read it (`Backfill`), placed in the transaction of the chunk's watermark. */
  readonly op: "insert" | "update" | "delete" | "read"
  /** A `read` row: the backfill that read it. */
  readonly snapshot?: string | undefined
  /** The new row (insert, update), without the columns in `unchanged`. */
  readonly new: Row | undefined
  /** The old row (REPLICA IDENTITY FULL) or, with `oldIsKey`, only its key; `undefined` when not sent. */
  readonly old: Row | undefined
  readonly oldIsKey: boolean
  /** Columns whose TOASTed value did not change and was not sent (not faked). */
  readonly unchanged: ReadonlyArray<string>
  /** The table's columns in its order (`new` and `old` hold those sent; an index-like name is listed first by `Object.keys`). */
  readonly columns: ReadonlyArray<string>
  /**
   * `JSON.stringify` of `new` and `old` is exact and in the table's column order (no float that JSON cannot hold, no
   * `__proto__` or index-like column name); otherwise use `Values.rowJson`.
   */
  readonly plainJson: boolean
}

/**
 * A table's shape, before its first change on a connection and before the first change after it changed (PostgreSQL
 * sent a Relation message that differs from the last one: a column added, dropped, renamed or retyped, including its
 * type modifier, or the key changed). In the change's transaction, right before it; `seq` is that change's.
 */
export interface SchemaEvent extends TableName, InTransaction {
  readonly _tag: "Schema"
  /** The relation's OID (pgoutput's relation id). */
  readonly relationId: number
  readonly columns: ReadonlyArray<SchemaColumn>
}

export interface SchemaColumn {
  readonly name: string
  /** As PostgreSQL writes it (`format_type`: `numeric(10,2)`, `character varying(20)`, `public.mood`). */
  readonly type: string | undefined
  readonly typeOid: number
  /** `atttypmod`: -1 when the type has none. */
  readonly typeModifier: number
  /** Part of the replica identity key. */
  readonly key: boolean
}

export interface TruncateEvent extends InTransaction {
  readonly _tag: "Truncate"
  readonly tables: ReadonlyArray<TableName>
  readonly cascade: boolean
  readonly restartIdentity: boolean
}

export interface MessageEvent {
  readonly _tag: "Message"
  readonly transactional: boolean
  readonly prefix: string
  readonly content: Uint8Array
  readonly lsn: Lsn
  /** A non-transactional message is acknowledged on its own, with this position. */
  readonly ackPosition: Lsn
  /** For a transactional message: where it is in its transaction. */
  readonly transaction: InTransaction | undefined
}

export type ReplicationEvent =
  | { readonly _tag: "Begin"; readonly xid: number; readonly commitLsn: Lsn; readonly commitTime: string }
  | SchemaEvent
  | ChangeEvent
  | TruncateEvent
  | MessageEvent
  /** Acknowledge `endLsn` once the transaction is durable downstream. */
  | { readonly _tag: "Commit"; readonly xid: number; readonly commitLsn: Lsn; readonly endLsn: Lsn; readonly commitTime: string; readonly changes: number }
  | ResyncEvent

/**
 * The stream's slot was lost and replaced by a new incarnation (policy `recreate`): the changes between the last one
 * delivered from `lostSlot` and `from` (where `slot` was created) are gone, and consumers must resync. Comes before
 * the new slot's first change; nothing to acknowledge.
 */
export interface ResyncEvent {
  readonly _tag: "Resync"
  readonly lostSlot: string
  readonly slot: string
  readonly from: Lsn
}

/** What is spooled per change: the event without its place in the transaction (known only at commit). */
type Spooled =
  | Omit<ChangeEvent, keyof InTransaction>
  | Omit<TruncateEvent, keyof InTransaction>
  | Omit<MessageEvent, "transaction">

/** The spool tag of a JSON record; any other tag is a change's message as it came, the tag its relation's number. */
const jsonTag = 0xffffffff

/**
 * A JSON spool record (of fixed shape; texts are strings or `null`, an unchanged TOASTed value `0`):
 * `[0, relation, op (0 insert, 1 update, 2 delete), new texts | null, old texts | null, old is key (0/1)]`,
 * `[1, relations, cascade, restart identity]`, `[2, transactional, prefix, content base64, lsn]`.
 */
type SpoolRecord =
  | readonly [0, number, 0 | 1 | 2, ReadonlyArray<string | null | 0> | null, ReadonlyArray<string | null | 0> | null, 0 | 1]
  | readonly [1, ReadonlyArray<number>, boolean, boolean]
  | readonly [2, boolean, string, string, string]

export const heartbeatPrefix = "slotkeeper:heartbeat:"

const ops = ["insert", "update", "delete"] as const
const toRecordTexts = (t: Tuple | undefined) => (t === undefined ? null : t.map((v) => (v === undefined ? 0 : v)))
const fromRecordTexts = (t: ReadonlyArray<string | null | 0> | null): Tuple | undefined => (t === null ? undefined : t.map((v) => (v === 0 ? undefined : v)))

// Built field by field rather than spread: once per change, on the hot path.
const place = (spooled: Spooled, at: InTransaction): ReplicationEvent => {
  switch (spooled._tag) {
    case "Message":
      return { ...spooled, transaction: at }
    case "Truncate":
      return { ...spooled, ...at }
    case "Change":
      return {
        _tag: "Change",
        op: spooled.op,
        schema: spooled.schema,
        table: spooled.table,
        xid: at.xid,
        commitLsn: at.commitLsn,
        commitTime: at.commitTime,
        seq: at.seq,
        new: spooled.new,
        old: spooled.old,
        oldIsKey: spooled.oldIsKey,
        unchanged: spooled.unchanged,
        columns: spooled.columns,
        plainJson: spooled.plainJson
      }
  }
}

export class Assembler {
  private current: { xid: number; commitLsn: Lsn; commitTime: string; seq: number; skip: boolean } | undefined
  private streaming: number | undefined
  private readonly start: Lsn
  private readonly spool: Spool
  private readonly resumeInside: Watermark.InTransaction | undefined
  private readonly rows: Rows
  /** The relations spooled records refer to, by number (a Relation message inside a streamed block changes them). */
  private readonly spooledRelations: Array<Relation> = []
  private readonly spooledIndex = new Map<Relation, number>()
  /** Decodes spooled changes at replay. */
  private readonly decoder = new Decoder()

  /**
   * `start`: where streaming started (the durable position); transactions committed below it are skipped.
   * `resumeInside`: a transaction consumed up to a change; its changes up to that `seq` are skipped.
   */
  constructor(start: Lsn, spool: Spool, resumeInside?: Watermark.InTransaction, rows: Rows = new Rows()) {
    this.start = start
    this.spool = spool
    this.resumeInside = resumeInside
    this.rows = rows
  }

  /**
   * The shape last announced per relation on this connection (a `Schema` event): the Relation message it came from, and
   * its shape as a comparable text. On the hot path only the message is compared (the decoder keeps one object per
   * Relation message); the text is computed when PostgreSQL sent a new one, which may describe the same shape.
   */
  private readonly announced = new Map<number, { readonly relation: Relation; readonly signature: string }>()
  /** A `Schema` event due before the change just built. */
  private pendingSchema: Omit<SchemaEvent, keyof InTransaction> | undefined

  private announce(relation: Relation): void {
    const last = this.announced.get(relation.oid)
    if (last?.relation === relation) return
    const signature = JSON.stringify([relation.schema, relation.name, relation.columns.map((c) => [c.name, c.typeOid, c.typeMod, c.key])])
    if (this.announced.size >= 100_000) this.announced.clear() // bounded, whatever the number of tables: announced again
    this.announced.set(relation.oid, { relation, signature })
    if (last?.signature === signature) return
    this.pendingSchema = {
      _tag: "Schema",
      schema: relation.schema,
      table: relation.name,
      relationId: relation.oid,
      columns: relation.columns.map((c) => ({ name: c.name, type: this.rows.typeName(c.typeOid, c.typeMod), typeOid: c.typeOid, typeModifier: c.typeMod, key: c.key }))
    }
  }

  /** The `Schema` event due before a change placed at `at`, if any (taken: announced once). */
  private *schemaBefore(at: InTransaction): Generator<ReplicationEvent> {
    const pending = this.pendingSchema
    if (pending === undefined) return
    this.pendingSchema = undefined
    yield { ...pending, ...at }
  }

  private change(op: "insert" | "update" | "delete", relation: Relation, newTuple: Tuple | undefined, oldTuple: Tuple | undefined, oldIsKey: boolean): Spooled {
    this.announce(relation)
    const shape = this.rows.shape(relation)
    const n = newTuple === undefined ? undefined : build(shape, newTuple)
    const o = oldTuple === undefined ? undefined : build(shape, oldTuple, oldIsKey)
    return {
      _tag: "Change",
      op,
      schema: relation.schema,
      table: relation.name,
      new: n?.row,
      old: o?.row,
      oldIsKey,
      unchanged: n?.unchanged ?? [],
      columns: shape.columns,
      plainJson: shape.plain && !shape.floats
    }
  }

  private eventOf(m: Message): Spooled | undefined {
    switch (m.tag) {
      case "insert":
        return this.change("insert", m.relation, m.new, undefined, false)
      case "update":
        return this.change("update", m.relation, m.new, m.old, m.oldIsKey)
      case "delete":
        return this.change("delete", m.relation, undefined, m.old, m.oldIsKey)
      case "truncate":
        return { _tag: "Truncate", tables: m.relations.map((r) => ({ schema: r.schema, table: r.name })), cascade: m.cascade, restartIdentity: m.restartIdentity }
      case "message":
        return { _tag: "Message", transactional: m.transactional, prefix: m.prefix, content: m.content, lsn: m.lsn, ackPosition: m.lsn + 1n }
      default:
        return undefined
    }
  }

  private relationNumber(relation: Relation): number {
    let n = this.spooledIndex.get(relation)
    if (n === undefined) {
      n = this.spooledRelations.push(relation) - 1
      this.spooledIndex.set(relation, n)
    }
    return n
  }

  private record(m: Message): SpoolRecord | undefined {
    switch (m.tag) {
      case "insert":
        return [0, this.relationNumber(m.relation), 0, toRecordTexts(m.new), null, 0]
      case "update":
        return [0, this.relationNumber(m.relation), 1, toRecordTexts(m.new), toRecordTexts(m.old), m.oldIsKey ? 1 : 0]
      case "delete":
        return [0, this.relationNumber(m.relation), 2, null, toRecordTexts(m.old), m.oldIsKey ? 1 : 0]
      case "truncate":
        return [1, m.relations.map((r) => this.relationNumber(r)), m.cascade, m.restartIdentity]
      case "message":
        return [2, m.transactional, m.prefix, Buffer.from(m.content).toString("base64"), m.lsn.toString()]
      default:
        return undefined
    }
  }

  /** A spooled record back as what it was spooled for. */
  private fromSpool(record: { readonly tag: number; readonly body: Buffer }): Spooled {
    if (record.tag === jsonTag) return this.fromRecord(JSON.parse(record.body.toString("utf8")) as SpoolRecord)
    const relation = this.spooledRelations[record.tag]
    if (relation === undefined) throw new Error(`spool: a change of relation number ${record.tag}, which was never spooled`)
    return this.eventOf(this.decoder.decodeStreamed(record.body, relation))!
  }

  private fromRecord(r: SpoolRecord): Spooled {
    switch (r[0]) {
      case 0:
        return this.change(ops[r[2]], this.spooledRelations[r[1]]!, fromRecordTexts(r[3]), fromRecordTexts(r[4]), r[5] === 1)
      case 1: {
        const relations = r[1].map((n) => this.spooledRelations[n]!)
        return { _tag: "Truncate", tables: relations.map((x) => ({ schema: x.schema, table: x.name })), cascade: r[2], restartIdentity: r[3] }
      }
      case 2: {
        const lsn = BigInt(r[4])
        return { _tag: "Message", transactional: r[1], prefix: r[2], content: new Uint8Array(Buffer.from(r[3], "base64")), lsn, ackPosition: lsn + 1n }
      }
    }
  }

  /** Whether the change at `seq` of the transaction committing at `commitLsn` was consumed before. */
  private consumed(commitLsn: Lsn, seq: number): boolean {
    return this.resumeInside !== undefined && this.resumeInside.commitLsn === commitLsn && seq <= this.resumeInside.seq
  }

  *push(m: Message): Generator<ReplicationEvent> {
    switch (m.tag) {
      case "begin": {
        this.current = { xid: m.xid, commitLsn: m.finalLsn, commitTime: m.commitTime, seq: 0, skip: Watermark.isDuplicate(this.start, m.finalLsn) }
        if (!this.current.skip) yield { _tag: "Begin", xid: m.xid, commitLsn: m.finalLsn, commitTime: m.commitTime }
        return
      }
      case "commit": {
        const c = this.current
        this.current = undefined
        if (c !== undefined && !c.skip) yield { _tag: "Commit", xid: c.xid, commitLsn: m.commitLsn, endLsn: m.endLsn, commitTime: m.commitTime, changes: c.seq }
        return
      }
      case "streamStart":
        this.streaming = m.xid
        return
      case "streamStop":
        this.streaming = undefined
        return
      case "streamAbort":
        this.spool.abort(m.xid, m.subxid)
        return
      case "streamCommit": {
        if (Watermark.isDuplicate(this.start, m.commitLsn)) {
          this.spool.drop(m.xid)
          return
        }
        yield { _tag: "Begin", xid: m.xid, commitLsn: m.commitLsn, commitTime: m.commitTime }
        let seq = 0
        for (const record of this.spool.replay(m.xid)) {
          seq++
          if (!this.consumed(m.commitLsn, seq)) {
            const at = { xid: m.xid, commitLsn: m.commitLsn, commitTime: m.commitTime, seq }
            const event = this.fromSpool(record)
            yield* this.schemaBefore(at)
            yield place(event, at)
          }
        }
        yield { _tag: "Commit", xid: m.xid, commitLsn: m.commitLsn, endLsn: m.endLsn, commitTime: m.commitTime, changes: seq }
        return
      }
      case "message":
        if (!m.transactional) {
          // outside any transaction; slotkeeper's own heartbeats are consumed by the watermark, not delivered
          if (m.prefix.startsWith(heartbeatPrefix) || m.lsn < this.start) return
          yield { _tag: "Message", transactional: false, prefix: m.prefix, content: m.content, lsn: m.lsn, ackPosition: m.lsn + 1n, transaction: undefined }
          return
        }
        break
      case "streamedChange":
        // as it came: decoded at the commit (`fromSpool`)
        this.spool.append(this.streaming ?? m.xid, m.xid, this.relationNumber(m.relation), m.raw)
        return
      case "insert":
      case "update":
      case "delete":
      case "truncate":
        break
      default:
        return // relation, type, origin: the decoder keeps what it needs
    }
    if ("xid" in m && m.xid !== undefined && this.streaming !== undefined) {
      this.spool.append(this.streaming, m.xid, jsonTag, JSON.stringify(this.record(m)!))
      return
    }
    const c = this.current
    if (c === undefined || c.skip) return
    c.seq++
    if (!this.consumed(c.commitLsn, c.seq)) {
      const at = { xid: c.xid, commitLsn: c.commitLsn, commitTime: c.commitTime, seq: c.seq }
      const event = this.eventOf(m)!
      yield* this.schemaBefore(at)
      yield place(event, at)
    }
  }
}
