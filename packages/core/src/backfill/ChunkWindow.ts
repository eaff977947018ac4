/**
 * ChunkWindow: where the rows that a backfill reads belong in the stream, and which of them are stale — the decision
 * at the heart of slotkeeper's watermark backfill (Netflix's DBLog, with PostgreSQL's own snapshot as the arbiter).
 * Pure: the backfill's shell feeds it the stream's events and the reads' results, and does what it answers.
 *
 * A chunk of a table is read (`SELECT … WHERE key > last ORDER BY key LIMIT n`) in a REPEATABLE READ transaction
 * while the stream goes on, so its rows are the table as of that transaction's snapshot S. After the read, a *high
 * watermark* is written (`pg_logical_emit_message`, transactional); where it arrives in the stream, the chunk's rows
 * are emitted as `read` changes — except those whose key a transaction that S does not see changed before it.
 *
 * **Why this is exact** (a read row never follows a newer change of its row, and no row is missed)
 * - A transaction that S sees became visible before S was taken, so its commit record is before the high watermark
 *   (written after the read): its changes come before the read rows, and the read rows include them.
 * - A transaction that S does not see and that commits after the high watermark comes after the read rows, which do
 *   not include it: its changes follow, as they should.
 * - A transaction that S does not see and that commits before the high watermark is newer than the read rows and
 *   comes before them: the rows whose key it changed are left out of the chunk (the stream has delivered their newer
 *   state: an insert, an update, or a delete). Dropping rows is always safe: a row left out was changed, and the
 *   change carries it.
 * - DBLog itself opens the window with a low watermark written before the read, and drops every row changed between
 *   the two: that assumes that a transaction's commit record and its visibility come in the same order for all
 *   transactions, which PostgreSQL does not promise (a commit record is written before the transaction leaves the
 *   proc array). Here visibility decides, by transaction id, from S (`xmin`, `xmax`, the in-progress list).
 *
 * The window opens (`open`) before S is taken, and records from then on which keys each transaction changed. A
 * transaction that S does not see whose commit the stream delivered *before* the window opened (it was between its
 * commit record and its visibility all that time) would be missed: `high` checks for it against the commits it
 * remembers (the last `recentCommits`) and answers `Retry` — read the chunk again — when it finds one, or when it cannot
 * tell (more commits than it remembers since the window opened), or when a change of the table came without its key
 * (a TOASTed key column that was not sent).
 *
 * Memory: the keys changed in the table while a window is open (the read of one chunk), and the last
 * `recentCommits` transaction ids.
 */
import type { Row } from "../replication/Values.ts"

/** A 32-bit transaction id, as the stream carries it. */
export type Xid = number

/** What `pg_current_snapshot()` says of the read's snapshot (ids taken modulo 2³², as the stream carries them). */
export interface Snapshot {
  /** Every transaction below it finished before the snapshot: committed ones are seen. */
  readonly xmin: Xid
  /** Every transaction at or above it had not begun: none is seen. */
  readonly xmax: Xid
  /** In progress when the snapshot was taken: not seen. */
  readonly xip: ReadonlyArray<Xid>
}

/** `a` comes before `b` (transaction ids wrap around: compared as PostgreSQL does, within 2³¹ of each other). */
const precedes = (a: Xid, b: Xid): boolean => ((a - b) | 0) < 0

/** Whether a transaction that committed is seen by `snapshot`. */
export const sees = (snapshot: Snapshot, xid: Xid): boolean =>
  precedes(xid, snapshot.xmin) || (precedes(xid, snapshot.xmax) && !snapshot.xip.includes(xid))

/** A change of a table, as the window needs it. */
export interface TableChange {
  readonly schema: string
  readonly table: string
  readonly xid: Xid
  readonly new: Row | undefined
  readonly old: Row | undefined
}

/** What to do at a chunk's high watermark. */
export type AtHigh =
  /** Emit these rows as `read` changes, here, in this order. */
  | { readonly _tag: "Emit"; readonly rows: ReadonlyArray<Row>; readonly dropped: number }
  /** The chunk cannot be placed exactly: read it again (nothing of it was emitted). */
  | { readonly _tag: "Retry"; readonly reason: string }
  /** Not a window of this process (a watermark written by an earlier owner, or one already answered). */
  | { readonly _tag: "Unknown" }

interface Window {
  readonly schema: string
  readonly table: string
  readonly keyOf: (row: Row) => string | undefined
  /** Commits counted before it opened. */
  readonly openedAt: number
  /** The keys each transaction changed since it opened. */
  readonly touched: Map<Xid, Set<string>>
  /** Transactions that changed the table without its key being known. */
  readonly keyless: Set<Xid>
  loaded?: { readonly snapshot: Snapshot; readonly rows: ReadonlyArray<Row> }
}

export class ChunkWindows {
  private readonly windows = new Map<string, Window>()
  private readonly capacity: number
  /** The last `capacity` commits: xid → the commit's number, and the order they came in. */
  private readonly committedAt = new Map<Xid, number>()
  private readonly ring: Array<Xid>
  private commits = 0

  constructor(recentCommits = 65_536) {
    this.capacity = recentCommits
    this.ring = new Array(recentCommits)
  }

  /** Opens the window of chunk `id` of `schema.table`, before its read's snapshot is taken. */
  open(id: string, schema: string, table: string, keyOf: (row: Row) => string | undefined): void {
    this.windows.set(id, { schema, table, keyOf, openedAt: this.commits, touched: new Map(), keyless: new Set() })
  }

  /** A change delivered by the stream (before the chunk's high watermark). */
  change(c: TableChange): void {
    for (const w of this.windows.values()) {
      if (w.schema !== c.schema || w.table !== c.table) continue
      for (const row of [c.new, c.old]) {
        if (row === undefined) continue
        const key = w.keyOf(row)
        if (key === undefined) {
          w.keyless.add(c.xid)
          continue
        }
        let keys = w.touched.get(c.xid)
        if (keys === undefined) w.touched.set(c.xid, keys = new Set())
        keys.add(key)
      }
    }
  }

  /** A transaction's commit delivered by the stream. */
  commit(xid: Xid): void {
    const slot = this.commits % this.capacity
    const evicted = this.ring[slot]
    if (evicted !== undefined && this.committedAt.get(evicted) === this.commits - this.capacity) this.committedAt.delete(evicted)
    this.ring[slot] = xid
    this.committedAt.set(xid, this.commits)
    this.commits++
  }

  /** Chunk `id` was read: its rows (in key order) and its snapshot. Comes before its high watermark is written. */
  loaded(id: string, snapshot: Snapshot, rows: ReadonlyArray<Row>): void {
    const w = this.windows.get(id)
    if (w !== undefined) w.loaded = { snapshot, rows }
  }

  /** Gives up chunk `id` (its read failed): nothing of it will be emitted. */
  close(id: string): void {
    this.windows.delete(id)
  }

  /** Chunk `id`'s high watermark arrived in the stream: what to emit there. The window closes. */
  high(id: string): AtHigh {
    const w = this.windows.get(id)
    if (w === undefined || w.loaded === undefined) return { _tag: "Unknown" }
    this.windows.delete(id)
    const { rows, snapshot } = w.loaded
    // a transaction S does not see, delivered before the window opened: its changes are not in `touched`
    if (this.commits - w.openedAt > this.capacity / 2) {
      return { _tag: "Retry", reason: `${this.commits - w.openedAt} commits while the chunk was read: more than can be checked` }
    }
    for (const xid of snapshot.xip) {
      const at = this.committedAt.get(xid)
      if (at !== undefined && at < w.openedAt) {
        return { _tag: "Retry", reason: `transaction ${xid} was delivered before the read began, yet its snapshot does not see it` }
      }
    }
    const stale = new Set<string>()
    for (const [xid, keys] of w.touched) {
      if (sees(snapshot, xid)) continue
      for (const key of keys) stale.add(key)
    }
    for (const xid of w.keyless) {
      if (!sees(snapshot, xid)) return { _tag: "Retry", reason: `transaction ${xid} changed ${w.schema}.${w.table} without sending its key` }
    }
    if (stale.size === 0) return { _tag: "Emit", rows, dropped: 0 }
    const kept = rows.filter((row) => {
      const key = w.keyOf(row)
      return key === undefined || !stale.has(key)
    })
    return { _tag: "Emit", rows: kept, dropped: rows.length - kept.length }
  }

  /** How many windows are open (for status). */
  get openWindows(): number {
    return this.windows.size
  }
}
