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
 */
import type { Lsn } from "../Lsn.ts"
import type { Message, Row } from "./Pgoutput.ts"
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
  readonly op: "insert" | "update" | "delete"
  /** The new row (insert, update), without the columns in `unchanged`. */
  readonly new: Row | undefined
  /** The old row (REPLICA IDENTITY FULL) or, with `oldIsKey`, only its key; `undefined` when not sent. */
  readonly old: Row | undefined
  readonly oldIsKey: boolean
  /** Columns whose TOASTed value did not change and was not sent (not faked). */
  readonly unchanged: ReadonlyArray<string>
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

export const heartbeatPrefix = "slotkeeper:heartbeat:"

const changeOf = (m: Message): Spooled | undefined => {
  switch (m.tag) {
    case "insert":
      return { _tag: "Change", op: "insert", schema: m.relation.schema, table: m.relation.name, new: m.new.row, old: undefined, oldIsKey: false, unchanged: m.new.unchanged }
    case "update":
      return { _tag: "Change", op: "update", schema: m.relation.schema, table: m.relation.name, new: m.new.row, old: m.old?.row, oldIsKey: m.oldIsKey, unchanged: m.new.unchanged }
    case "delete":
      return { _tag: "Change", op: "delete", schema: m.relation.schema, table: m.relation.name, new: undefined, old: m.old.row, oldIsKey: m.oldIsKey, unchanged: [] }
    case "truncate":
      return { _tag: "Truncate", tables: m.relations.map((r) => ({ schema: r.schema, table: r.name })), cascade: m.cascade, restartIdentity: m.restartIdentity }
    case "message":
      return { _tag: "Message", transactional: m.transactional, prefix: m.prefix, content: m.content, lsn: m.lsn, ackPosition: m.lsn + 1n }
    default:
      return undefined
  }
}

const place = (spooled: Spooled, at: InTransaction): ReplicationEvent =>
  spooled._tag === "Message" ? { ...spooled, transaction: at } : { ...spooled, ...at }

export class Assembler {
  private current: { xid: number; commitLsn: Lsn; commitTime: string; seq: number; skip: boolean } | undefined
  private streaming: number | undefined
  private readonly start: Lsn
  private readonly spool: Spool
  private readonly resumeInside: Watermark.InTransaction | undefined

  /**
   * `start`: where streaming started (the durable position); transactions committed below it are skipped.
   * `resumeInside`: a transaction consumed up to a change; its changes up to that `seq` are skipped.
   */
  constructor(start: Lsn, spool: Spool, resumeInside?: Watermark.InTransaction) {
    this.start = start
    this.spool = spool
    this.resumeInside = resumeInside
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
        for (const spooled of this.spool.replay(m.xid)) {
          seq++
          if (!this.consumed(m.commitLsn, seq)) yield place(spooled as Spooled, { xid: m.xid, commitLsn: m.commitLsn, commitTime: m.commitTime, seq })
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
      case "insert":
      case "update":
      case "delete":
      case "truncate":
        break
      default:
        return // relation, type, origin: the decoder keeps what it needs
    }
    const change = changeOf(m)!
    if ("xid" in m && m.xid !== undefined && this.streaming !== undefined) {
      this.spool.append(this.streaming, m.xid, change)
      return
    }
    const c = this.current
    if (c === undefined || c.skip) return
    c.seq++
    if (!this.consumed(c.commitLsn, c.seq)) yield place(change, { xid: c.xid, commitLsn: c.commitLsn, commitTime: c.commitTime, seq: c.seq })
  }
}
