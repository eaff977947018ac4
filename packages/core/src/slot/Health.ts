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
  readonly code: "SlotMissing" | "SlotInvalidated" | "WalExtended" | "WalUnreserved" | "SafeWalLow" | "RetainedHigh" | "NotFailover"
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
      message: `replication slot ${slotName} is invalidated (${row.invalidationReason ?? (row.walStatus === "lost" ? "wal_status lost" : "conflicting")}): it can no longer be streamed from`
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
  const level: Level = findings.some((f) => f.level === "error") ? "error" : findings.length > 0 ? "warn" : "ok"
  return { level, findings, retainedBytes, flushLagBytes, walStatus: row.walStatus, safeWalSize: row.safeWalSize }
}
