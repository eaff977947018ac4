/**
 * Health: the pure assessment of a replication slot's row — what to show in the status, and what to warn about
 * *before* the slot is lost (others react only when START_REPLICATION fails).
 *
 * Columns appear with server versions: `wal_status`/`safe_wal_size` (13), `conflicting` (16),
 * `invalidation_reason`/`inactive_since`/`failover`/`synced` (17). A column the server lacks is `undefined` and is
 * simply not judged.
 */
import { format, type Lsn } from "../Lsn.ts"

export interface SlotRow {
  readonly slotName: string
  readonly active: boolean
  readonly activePid: number | undefined
  readonly temporary: boolean
  readonly restartLsn: Lsn | undefined
  readonly confirmedFlush: Lsn | undefined
  readonly walStatus: string | undefined
  readonly safeWalSize: bigint | undefined
  readonly conflicting: boolean | undefined
  readonly invalidationReason: string | undefined
  readonly inactiveSince: string | undefined
  readonly failover: boolean | undefined
  readonly synced: boolean | undefined
  /** Seconds since `inactive_since`, by the server's clock (PostgreSQL 17+; `undefined` while active). */
  readonly inactiveSeconds?: number | undefined
  /** `idle_replication_slot_timeout` in seconds (PostgreSQL 18+; `undefined` when 0, off, or older). */
  readonly idleTimeoutSeconds?: number | undefined
}

export interface Thresholds {
  /** Warn when the slot holds more WAL than this behind the current position (restart_lsn lag). */
  readonly retainedWarnBytes: bigint
  /** Warn when fewer bytes than this can still be written before the slot is lost (safe_wal_size). */
  readonly safeWalWarnBytes: bigint
  /** The slot is meant to be a failover slot (PostgreSQL 17+). */
  readonly wantFailover: boolean
}

/** Warn at 1 GiB retained, or under 256 MiB of `safe_wal_size`; expect a failover slot. */
export const defaultThresholds: Thresholds = { retainedWarnBytes: 1n << 30n, safeWalWarnBytes: 256n << 20n, wantFailover: true }

export type Level = "ok" | "warn" | "error"

export interface Finding {
  readonly level: "warn" | "error"
  readonly code: "SlotMissing" | "SlotInvalidated" | "WalExtended" | "WalUnreserved" | "SafeWalLow" | "RetainedHigh" | "NotFailover" | "IdleTimeoutNear"
  readonly message: string
}

export interface Assessment {
  readonly level: Level
  readonly findings: ReadonlyArray<Finding>
  /** Bytes of WAL the slot retains behind the current position. */
  readonly retainedBytes: bigint | undefined
  /** Bytes between the slot's confirmed position and the current position. */
  readonly flushLagBytes: bigint | undefined
  /** `reserved`, `extended`, `unreserved`, `lost` (PostgreSQL 13+); `undefined` when the slot is missing. */
  readonly walStatus: string | undefined
  /** Bytes of WAL that can still be written before the slot is lost (`safe_wal_size`; `undefined`: no limit, or unknown). */
  readonly safeWalSize?: bigint | undefined
  /** Since when the slot is inactive (`inactive_since`, PostgreSQL 17+), as the server prints it. */
  readonly inactiveSince?: string | undefined
  /**
   * Seconds left before `idle_replication_slot_timeout` (PostgreSQL 18+) lets the server invalidate the inactive slot
   * (at its next checkpoint after that); `undefined` while active or without the timeout.
   */
  readonly idleTimeoutLeftSeconds?: number | undefined
}

/** `idle_replication_slot_timeout` below this is warned of by `check`: a stream stopped longer than it loses its slot. */
export const idleTimeoutSafeSeconds = 24 * 3600

/** A duration in seconds as a person reads it (`2 h 5 min`, `45 s`). */
export const seconds = (s: number): string => {
  const t = Math.max(0, Math.round(s))
  if (t < 120) return `${t} s`
  if (t < 2 * 3600) return `${Math.round(t / 60)} min`
  if (t < 2 * 86400) return `${Math.floor(t / 3600)} h ${Math.round((t % 3600) / 60)} min`
  return `${(t / 86400).toFixed(1)} days`
}

const mib = (bytes: bigint) => `${(Number(bytes) / 1048576).toFixed(1)} MiB`

export const assess = (slotName: string, row: SlotRow | undefined, currentLsn: Lsn, thresholds: Thresholds): Assessment => {
  if (row === undefined) {
    return {
      level: "error",
      findings: [{ level: "error", code: "SlotMissing", message: `replication slot ${slotName} does not exist` }],
      retainedBytes: undefined,
      flushLagBytes: undefined,
      walStatus: undefined
    }
  }
  const findings: Array<Finding> = []
  const retainedBytes = row.restartLsn === undefined ? undefined : currentLsn - row.restartLsn
  const flushLagBytes = row.confirmedFlush === undefined ? undefined : currentLsn - row.confirmedFlush
  if (row.invalidationReason !== undefined || row.walStatus === "lost" || row.conflicting === true) {
    findings.push({
      level: "error",
      code: "SlotInvalidated",
      message: row.invalidationReason === "idle_timeout"
        ? `replication slot ${slotName} was invalidated by idle_replication_slot_timeout (idle_timeout): it was inactive for longer than ` +
          `${row.idleTimeoutSeconds === undefined ? "the timeout" : seconds(row.idleTimeoutSeconds)} — no instance of the stream ran meanwhile — and can no longer be streamed from ` +
          `(set idle_replication_slot_timeout longer than any outage of the stream, or 0)`
        : `replication slot ${slotName} is invalidated (${row.invalidationReason ?? (row.walStatus === "lost" ? "wal_status lost" : "conflicting")}): it can no longer be streamed from`
    })
  } else if (row.walStatus === "unreserved") {
    findings.push({ level: "warn", code: "WalUnreserved", message: `replication slot ${slotName}: the WAL it needs is about to be removed (wal_status unreserved); the consumer must catch up now or the slot is lost` })
  } else if (row.walStatus === "extended") {
    findings.push({ level: "warn", code: "WalExtended", message: `replication slot ${slotName} retains WAL beyond max_wal_size (wal_status extended)` })
  }
  if (row.safeWalSize !== undefined && row.safeWalSize < thresholds.safeWalWarnBytes && findings.every((f) => f.level !== "error")) {
    findings.push({ level: "warn", code: "SafeWalLow", message: `replication slot ${slotName}: only ${mib(row.safeWalSize < 0n ? 0n : row.safeWalSize)} of WAL can be written before it is lost (max_slot_wal_keep_size)` })
  }
  if (retainedBytes !== undefined && retainedBytes > thresholds.retainedWarnBytes) {
    findings.push({ level: "warn", code: "RetainedHigh", message: `replication slot ${slotName} retains ${mib(retainedBytes)} of WAL (restart_lsn ${format(row.restartLsn!)}); warn threshold ${mib(thresholds.retainedWarnBytes)}` })
  }
  if (thresholds.wantFailover && row.failover === false) {
    findings.push({ level: "warn", code: "NotFailover", message: `replication slot ${slotName} is not a failover slot: a standby cannot carry it through a failover` })
  }
  // PostgreSQL 18 invalidates a slot inactive for longer than idle_replication_slot_timeout: say so from half of it
  const idleTimeoutLeftSeconds = !row.active && row.idleTimeoutSeconds !== undefined && row.inactiveSeconds !== undefined && row.invalidationReason === undefined
    ? Math.max(0, row.idleTimeoutSeconds - row.inactiveSeconds)
    : undefined
  if (idleTimeoutLeftSeconds !== undefined && idleTimeoutLeftSeconds < row.idleTimeoutSeconds! / 2) {
    findings.push({
      level: "warn",
      code: "IdleTimeoutNear",
      message: `replication slot ${slotName} has been inactive for ${seconds(row.inactiveSeconds!)}: the server invalidates it ${seconds(idleTimeoutLeftSeconds)} from now ` +
        `(idle_replication_slot_timeout ${seconds(row.idleTimeoutSeconds!)}) unless an instance of the stream runs`
    })
  }
  const level: Level = findings.some((f) => f.level === "error") ? "error" : findings.length > 0 ? "warn" : "ok"
  return {
    level,
    findings,
    retainedBytes,
    flushLagBytes,
    walStatus: row.walStatus,
    safeWalSize: row.safeWalSize,
    ...(row.inactiveSince === undefined ? {} : { inactiveSince: row.inactiveSince }),
    ...(idleTimeoutLeftSeconds === undefined ? {} : { idleTimeoutLeftSeconds })
  }
}
