/**
 * Resume: the pure decision, at every start and reconnect, of whether streaming may resume from the durable
 * position — or of what went wrong, loudly.
 *
 * The consumer's durable position (the end LSN of the last transaction it acknowledged as durable, which is also
 * what is reported to the server as flushed) is the only truth. The slot's `confirmed_flush_lsn` is only an upper
 * bound on what the server will still send. Kept next to the position: what it belongs to — the system identifier,
 * the timeline, and the slot name with its incarnation.
 *
 * | found | decision |
 * |---|---|
 * | no durable position yet (first run) | start from the slot |
 * | slot missing | `SlotMissing`: the position is lost; never quietly re-created under the same name |
 * | slot invalidated / `wal_status = lost` / conflicting | `SlotInvalidated` |
 * | the slot is not the one the position belongs to (another incarnation) | `SlotIncarnationChanged`: resync required |
 * | ... and that one is a retired incarnation of this stream, replaced under policy `recreate` | start the new one from its slot, with `resync` (once: the next save names the new slot) |
 * | another system identifier | `SystemMismatch`: this is another cluster |
 * | a lower timeline than the position's | `TimelineBehind`: an old primary; refuse |
 * | a higher timeline, position after the switch point of its timeline | `PositionOnLostTimeline`: the position's transactions were lost at failover |
 * | a higher timeline, and the slot (17+) was not synchronized from the old primary | `SlotNotSynchronized`: not the slot the position belongs to |
 * | `confirmed_flush_lsn` > durable position | `SlotAhead`: changes in between will never be sent again |
 * | otherwise | start at the durable position; transactions ending at or below it are duplicates to skip |
 */
import { Data } from "effect"
import { format, type Lsn } from "../Lsn.ts"

/** Inside a transaction that was partly consumed: its commit position and the last consumed change (`seq`). */
export interface InTransaction {
  readonly commitLsn: Lsn
  readonly seq: number
}

export interface DurablePosition {
  /** Everything that committed below this was consumed (the end of the last fully acknowledged transaction). */
  readonly lsn: Lsn
  readonly systemId: string
  readonly timeline: number
  readonly slotName: string
  /** The next transaction, partly consumed: its changes up to `seq` are not delivered again. */
  readonly inTransaction?: InTransaction | undefined
}

export interface SlotState {
  readonly slotName: string
  readonly exists: boolean
  readonly confirmedFlush: Lsn | undefined
  /** PostgreSQL 17+: NULL when valid. */
  readonly invalidationReason: string | undefined
  /** PostgreSQL 13+. */
  readonly walStatus: string | undefined
  /** PostgreSQL 16+. */
  readonly conflicting: boolean | undefined
  /** PostgreSQL 17+: the slot was synchronized from a primary (and stays marked so after a promotion). */
  readonly synced?: boolean | undefined
}

export interface ServerIdentity {
  readonly systemId: string
  readonly timeline: number
  /** From TIMELINE_HISTORY: the LSN at which each earlier timeline ended. */
  readonly switchPoints: ReadonlyMap<number, Lsn>
}

export class ResumeRefused extends Data.TaggedError("ResumeRefused")<{
  readonly reason:
    | "SlotMissing"
    | "SlotInvalidated"
    | "SlotIncarnationChanged"
    | "SystemMismatch"
    | "TimelineBehind"
    | "PositionOnLostTimeline"
    | "SlotNotSynchronized"
    | "SlotAhead"
  readonly message: string
}> {}

export type Decision =
  /** `resync`: the durable position belonged to a lost incarnation; what happened in between is lost to consumers. */
  | { readonly _tag: "StartFromSlot"; readonly resync?: { readonly lostSlot: string } }
  | { readonly _tag: "Resume"; readonly from: Lsn }
  | { readonly _tag: "Refuse"; readonly error: ResumeRefused }

const refuse = (reason: ResumeRefused["reason"], message: string): Decision => ({ _tag: "Refuse", error: new ResumeRefused({ reason, message }) })

export interface DecideOptions {
  /**
   * The slot the durable position belongs to is a retired incarnation of this stream, replaced by policy `recreate`:
   * start the current one from its slot instead of refusing (the caller said consumers must resync).
   */
  readonly replacedIncarnation?: boolean
}

export const decide = (durable: DurablePosition | undefined, slot: SlotState, server: ServerIdentity, options: DecideOptions = {}): Decision => {
  if (!slot.exists) {
    return refuse("SlotMissing", `replication slot ${slot.slotName} does not exist: the stream's position is lost. It is not re-created under ` +
      `the same name (standbys match slots by name); a new incarnation needs a resync of the consumers`)
  }
  if (slot.invalidationReason === "idle_timeout") {
    // PostgreSQL 18: inactive for longer than idle_replication_slot_timeout — an outage of the stream, not lost WAL
    return refuse("SlotInvalidated", `replication slot ${slot.slotName} was invalidated by idle_replication_slot_timeout (idle_timeout): no ` +
      `instance of the stream ran for longer than the timeout, so the server gave up the changes it kept for it; a new incarnation needs a resync ` +
      `of the consumers. Set idle_replication_slot_timeout longer than any outage of the stream (or 0)`)
  }
  if (slot.invalidationReason !== undefined || slot.walStatus === "lost" || slot.conflicting === true) {
    return refuse("SlotInvalidated", `replication slot ${slot.slotName} is invalidated (${slot.invalidationReason ?? (slot.walStatus === "lost" ? "wal_status lost" : "conflicting with recovery")}): ` +
      `the WAL it needed is gone, so changes were lost; a new incarnation needs a resync of the consumers`)
  }
  if (durable === undefined) return { _tag: "StartFromSlot" }
  if (durable.slotName !== slot.slotName && options.replacedIncarnation === true && durable.systemId === server.systemId) {
    return { _tag: "StartFromSlot", resync: { lostSlot: durable.slotName } }
  }
  if (durable.slotName !== slot.slotName) {
    return refuse("SlotIncarnationChanged", `the durable position belongs to slot ${durable.slotName}, the stream now uses ${slot.slotName}: ` +
      `positions of one slot mean nothing in another; consumers must resync`)
  }
  if (durable.systemId !== server.systemId) {
    return refuse("SystemMismatch", `the server's system identifier is ${server.systemId}, the durable position belongs to ${durable.systemId}: ` +
      `this is another cluster (a restored backup or a wrong URL); refusing to stream from it`)
  }
  if (server.timeline < durable.timeline) {
    return refuse("TimelineBehind", `the server is on timeline ${server.timeline}, the durable position is on ${durable.timeline}: ` +
      `this is an old primary that did not follow a failover; point the URL at the current primary`)
  }
  if (server.timeline > durable.timeline) {
    const switchPoint = server.switchPoints.get(durable.timeline)
    if (switchPoint === undefined) {
      return refuse("PositionOnLostTimeline", `the server is on timeline ${server.timeline} but its history has no switch point for timeline ` +
        `${durable.timeline}, where the durable position was written: it cannot be shown to survive the failover`)
    }
    if (durable.lsn > switchPoint) {
      return refuse("PositionOnLostTimeline", `the durable position ${format(durable.lsn)} on timeline ${durable.timeline} lies after that ` +
        `timeline's switch point ${format(switchPoint)}: the transactions up to it were lost at the failover, and positions after ` +
        `the switch point belong to other transactions now; consumers must resync`)
    }
    if (slot.synced === false) {
      return refuse("SlotNotSynchronized", `the server is on timeline ${server.timeline} (a failover since the durable position's timeline ` +
        `${durable.timeline}), but replication slot ${slot.slotName} was not synchronized from the old primary: it is another slot under ` +
        `the same name, and its positions say nothing about what the consumers have; consumers must resync`)
    }
  }
  if (slot.confirmedFlush !== undefined && slot.confirmedFlush > durable.lsn) {
    return refuse("SlotAhead", `replication slot ${slot.slotName} is at ${format(slot.confirmedFlush)}, ahead of the durable position ` +
      `${format(durable.lsn)}: the changes in between will never be sent again (the slot was advanced or re-created behind ` +
      `slotkeeper's back); refusing to continue silently`)
  }
  return { _tag: "Resume", from: durable.lsn }
}
