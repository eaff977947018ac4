/**
 * StreamStatus: what a running stream is doing, as a probe or an operator asks it — the state a health check answers
 * from, and the service the HTTP routes (`HttpRoutes`) and the metrics (`StreamMetrics`) read.
 *
 * **Details**
 * - `state` is the one decision: `active` means *capturing* — this instance owns the stream **and** a replication
 *   connection of the current holding period streams. An owner still setting up (publication, slot, connection) or
 *   reconnecting is `starting`; a capture left from an earlier holding period does not count.
 * - `health` (`GET /health`): 200 while `starting`, `waiting` or `active` — a waiting instance is healthy, it is what a
 *   rolling deploy starts — and 503 when `failed` or `stopping`. `owner` (`GET /health/owner`): 200 only while
 *   `active` (for a service that routes to the owner, or waits for capture to have begun before it writes).
 * - Both answers carry the same JSON: state, owner, capturing, epoch, capture start (where the stream's slot was
 *   created: every transaction committing after it is delivered), where the connection streams from, failover
 *   readiness and the publication's problems.
 *
 * All of it is pure; the service (`StreamStatus`) is how a running stream lends its current snapshot.
 */
import { Context, type Effect } from "effect"
import * as Lsn from "../Lsn.ts"
import type { OwnershipStatus } from "../ownership/Ownership.ts"
import type { Capture } from "../replication/Delivery.ts"
import type * as SchemaTables from "../publication/SchemaTables.ts"
import type { Assessment } from "../slot/Health.ts"
import type * as SessionSecurity from "./SessionSecurity.ts"

export interface Snapshot {
  readonly streamId: string
  readonly status: OwnershipStatus
  /** Set while a replication connection of this instance streams. */
  readonly capture: Capture | undefined
  /** Whether the standbys given have a sync-ready copy of the failover slot; `undefined`: none given, or unknown. */
  readonly failoverReady?: boolean | undefined
  readonly slotName: string | undefined
  readonly slot: Assessment | undefined
  /** The durable, acknowledged position. */
  readonly acknowledgedLsn: bigint | undefined
  /** What is wrong with the publication (drift, renamed or dropped tables, a repair refused for the application's sake). */
  readonly publicationProblems?: ReadonlyArray<{ readonly code: string; readonly message: string }> | undefined
  /** While the server cannot be reached yet: why, and how many attempts were made. */
  readonly waiting?: { readonly reason: string; readonly attempts: number } | undefined
  /** The instance's sessions and whether each is encrypted, by the server's account (`SessionSecurity`). */
  readonly sessions?: ReadonlyArray<SessionSecurity.Session> | undefined
  /** Tables of the stream's schemas left out of the publication (they would break the application's writes). */
  readonly unpublished?: ReadonlyArray<SchemaTables.Skipped> | undefined
}

export type State = "starting" | "waiting" | "active" | "stopping" | "failed"

export const states: ReadonlyArray<State> = ["starting", "waiting", "active", "stopping", "failed"]

/** `active` only while capturing: an owner that is not streaming (yet, or while it reconnects) is `starting`. */
export const state = (s: Pick<Snapshot, "status" | "capture">): State => {
  switch (s.status._tag) {
    case "Starting":
      return "starting"
    case "Waiting":
      return "waiting"
    case "Active":
      return (s.capture !== undefined && s.capture.epoch === s.status.epoch) ? "active" : "starting"
    case "Stopping":
      return "stopping"
    case "Failed":
      return "failed"
  }
}

/** An HTTP answer: status code and JSON body. */
export interface Answer {
  readonly status: number
  readonly body: Record<string, unknown>
}

const body = (s: Snapshot, st: State): Record<string, unknown> => ({
  state: st,
  owner: s.status._tag === "Active",
  capturing: st === "active",
  epoch: s.status._tag === "Active" ? s.status.epoch : null,
  capture_start_lsn: s.capture?.origin === undefined ? null : Lsn.format(s.capture.origin),
  streaming_from: s.capture === undefined ? null : Lsn.format(s.capture.from),
  failover_ready: s.failoverReady ?? null,
  publication_problems: s.publicationProblems ?? [],
  ...(s.unpublished === undefined || s.unpublished.length === 0 ? {} : {
    unpublished_tables: s.unpublished.map((t) => ({ table: `${t.schema}.${t.name}`, reason: t.reason, message: t.message }))
  }),
  // the stream's persistent slot as the last health round saw it (the slot an outage puts at risk)
  ...(s.slotName === undefined || s.slot === undefined ? {} : {
    slot: {
      name: s.slotName,
      level: s.slot.level,
      wal_status: s.slot.walStatus ?? null,
      inactive_since: s.slot.inactiveSince ?? null,
      idle_timeout_left_seconds: s.slot.idleTimeoutLeftSeconds ?? null,
      findings: s.slot.findings.map((f) => ({ code: f.code, level: f.level, message: f.message }))
    }
  }),
  ...(s.waiting === undefined || st !== "starting" ? {} : { waiting_for_server: s.waiting.reason, startup_attempts: s.waiting.attempts }),
  ...(s.sessions === undefined ? {} : { sessions: s.sessions.map((x) => ({ role: x.role, pid: x.pid, encrypted: x.encrypted, tls: x.tls ?? null })) })
})

/** `GET /health`: 200 unless failed or stopping. */
export const health = (s: Snapshot): Answer => {
  const st = state(s)
  return { status: st === "failed" || st === "stopping" ? 503 : 200, body: body(s, st) }
}

/** `GET /health/owner`: 200 only while capturing. */
export const owner = (s: Snapshot): Answer => {
  const st = state(s)
  return { status: st === "active" ? 200 : 503, body: body(s, st) }
}

/** The running stream's current snapshot, read on every request. */
export class StreamStatus extends Context.Service<StreamStatus, {
  readonly snapshot: Effect.Effect<Snapshot>
}>()("@slotkeeper/core/StreamStatus") {}
