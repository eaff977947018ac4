/**
 * Ndjson: the CLI's output contract — one JSON object per line, one line per change, in commit order:
 *
 * `{"type":"change","epoch":E,"op":"insert|update|delete","schema":...,"table":...,"xid":...,"commit_lsn":"X/Y",
 *   "seq":N,"commit_time":...,"new":{...}|null,"old":{...}|null,"old_is_key":bool,"unchanged":[...]}`
 *
 * A row read by a backfill is a change line with `"op":"read"` and `"snapshot":"<backfill id>"` after `op`, its `new`
 * the row as it was read; it comes in the transaction of its chunk's watermark (`xid`, `commit_lsn`, `seq` are that
 * transaction's), never after a newer change of the same row.
 *
 * `epoch` is the ownership epoch the line was written under (the fencing token): a receiver that keeps the highest it
 * has seen refuses a deposed owner's lines.
 *
 * A `schema` line (`schema`, `table`, `relation_id`, `columns`: each `name`, `type` as PostgreSQL writes it, `type_oid`,
 * `type_modifier`, `key`; `xid`, `commit_lsn`, `commit_time`, no `seq`) comes before the first change of each table on
 * each connection and before the first change after the table's shape changed, in that change's transaction.
 *
 * `truncate` lines carry `tables`, `cascade`, `restart_identity`; `message` lines `prefix`, `content` (UTF-8 text, or
 * `content_base64` when it is not valid UTF-8) and `transactional`. A `resync` line (`lost_slot`, `slot`, `from`) says
 * that the stream's slot was lost and replaced (`--on-slot-lost recreate`): changes in between are gone. Values are mapped as `@slotkeeper/core`'s
 * `Values` documents (its table is the README's); `new` and `old` list the columns in the table's order.
 */
import * as Lsn from "../Lsn.ts"
import type * as ReplicationStream from "../replication/ReplicationStream.ts"
import * as Values from "../replication/Values.ts"

const rowText = (row: Values.Row | undefined, event: ReplicationStream.ChangeEvent): string =>
  row === undefined ? "null" : event.plainJson ? JSON.stringify(row) : Values.rowJson(row, event.columns)

const utf8 = new TextDecoder("utf-8", { fatal: true })

// The envelope's parts that repeat from line to line (a table's name, a transaction's commit), rendered once: the
// last ones seen, or per table.
const tableTexts = new Map<string, Map<string, string>>()
const tableText = (schema: string, table: string): string => {
  let bySchema = tableTexts.get(schema)
  if (bySchema === undefined) tableTexts.set(schema, bySchema = new Map())
  let text = bySchema.get(table)
  if (text === undefined) {
    if (bySchema.size >= 10_000) bySchema.clear() // bounded, whatever the number of tables
    bySchema.set(table, text = `"schema":${JSON.stringify(schema)},"table":${JSON.stringify(table)},`)
  }
  return text
}
let lastCommit: { readonly lsn: Lsn.Lsn; readonly text: string } | undefined
const commitLsnText = (lsn: Lsn.Lsn): string =>
  lastCommit !== undefined && lastCommit.lsn === lsn ? lastCommit.text : (lastCommit = { lsn, text: Lsn.format(lsn) }).text
let lastTime: { readonly time: string; readonly text: string } | undefined
const commitTimeText = (time: string): string =>
  lastTime !== undefined && lastTime.time === time ? lastTime.text : (lastTime = { time, text: JSON.stringify(time) }).text

/** The line for `event` written under `epoch`, or `undefined` for events that have no line (Begin, Commit). */
export const line = (event: ReplicationStream.ReplicationEvent, epoch: number): string | undefined => {
  switch (event._tag) {
    case "Change":
      // written by hand: rows need Values' exact JSON, and the envelope's fields are known
      return `{"type":"change","epoch":${epoch},"op":"${event.op}",${event.snapshot === undefined ? "" : `"snapshot":${JSON.stringify(event.snapshot)},`}${tableText(event.schema, event.table)}` +
        `"xid":${event.xid},"commit_lsn":"${commitLsnText(event.commitLsn)}","seq":${event.seq},"commit_time":${commitTimeText(event.commitTime)},` +
        `"new":${rowText(event.new, event)},"old":${rowText(event.old, event)},"old_is_key":${event.oldIsKey},"unchanged":${event.unchanged.length === 0 ? "[]" : JSON.stringify(event.unchanged)}}`
    case "Schema":
      // no seq: it shares the place of the change it precedes, and dedupe keys (commit_lsn, seq) are the changes'
      return JSON.stringify({
        type: "schema",
        epoch,
        schema: event.schema,
        table: event.table,
        relation_id: event.relationId,
        columns: event.columns.map((c) => ({ name: c.name, type: c.type ?? null, type_oid: c.typeOid, type_modifier: c.typeModifier, key: c.key })),
        xid: event.xid,
        commit_lsn: Lsn.format(event.commitLsn),
        commit_time: event.commitTime
      })
    case "Truncate":
      return JSON.stringify({
        type: "truncate",
        epoch,
        tables: event.tables.map((t) => ({ schema: t.schema, table: t.table })),
        cascade: event.cascade,
        restart_identity: event.restartIdentity,
        xid: event.xid,
        commit_lsn: Lsn.format(event.commitLsn),
        seq: event.seq,
        commit_time: event.commitTime
      })
    case "Message": {
      let content: Record<string, string>
      try {
        content = { content: utf8.decode(event.content) }
      } catch {
        content = { content_base64: Buffer.from(event.content).toString("base64") }
      }
      return JSON.stringify({
        type: "message",
        epoch,
        prefix: event.prefix,
        ...content,
        transactional: event.transactional,
        lsn: Lsn.format(event.lsn),
        ...(event.transaction === undefined ? {} : { xid: event.transaction.xid, commit_lsn: Lsn.format(event.transaction.commitLsn), seq: event.transaction.seq })
      })
    }
    case "Resync":
      return JSON.stringify({
        type: "resync",
        epoch,
        lost_slot: event.lostSlot,
        slot: event.slot,
        from: Lsn.format(event.from),
        message: `the stream's slot ${event.lostSlot} was lost and replaced by ${event.slot}: changes in between are lost; resync from the source`
      })
    default:
      return undefined
  }
}
