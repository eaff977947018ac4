/**
 * HealthServer: `--http-port` — what a probe or a scraper asks a running instance.
 *
 * - `GET /health`: 200 with `{"state": ...}` while `starting`, `waiting` or `active` (a waiting instance is healthy:
 *   that is what a rolling deploy starts); 503 when `failed` or `stopping`. `active` means capturing: this instance
 *   owns the stream *and* its replication connection streams; an owner still setting up (publication, slot,
 *   connection) or reconnecting is `starting`. The body names the epoch, the capture start (where the stream's slot
 *   was created: every transaction that commits after it is delivered) and where the connection streams from.
 * - `GET /health/owner`: 200 only while `active`, else 503 (for a service that should route to the owner, or wait
 *   for capture to have begun before it writes).
 * - `GET /metrics`: Prometheus text — state, capturing, capture start, failover readiness (with `--standby-url`),
 *   ownership epoch, acknowledged LSN, slot lag and `wal_status`, changes and transactions delivered, errors.
 *
 * The answers are pure functions of a snapshot (`health`, `metrics`), served by a small `node:http` server that
 * lives as long as the command's scope.
 */
import { createServer } from "node:http"
import { type Delivery, type Health, Lsn, type OwnershipStatus } from "@slotkeeper/core"
import { Effect, type Scope } from "effect"

export interface Snapshot {
  readonly streamId: string
  readonly status: OwnershipStatus
  /** Set while a replication connection of this instance streams. */
  readonly capture: Delivery.Capture | undefined
  /** Whether the standbys given (`--standby-url`) have a sync-ready copy of the failover slot; `undefined`: unknown. */
  readonly failoverReady?: boolean | undefined
  readonly slotName: string | undefined
  readonly slot: Health.Assessment | undefined
  readonly acknowledgedLsn: bigint | undefined
  readonly changes: number
  readonly transactions: number
  readonly errors: number
  /** What is wrong with the publication (drift, renamed or dropped tables, a repair refused for the application's sake). */
  readonly publicationProblems?: ReadonlyArray<{ readonly code: string; readonly message: string }> | undefined
}

export type State = "starting" | "waiting" | "active" | "stopping" | "failed"

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

export interface Answer {
  readonly status: number
  readonly contentType: string
  readonly body: string
}

/** The JSON both health answers carry. */
const body = (s: Snapshot, st: State) => JSON.stringify({
  state: st,
  owner: s.status._tag === "Active",
  capturing: st === "active",
  epoch: s.status._tag === "Active" ? s.status.epoch : null,
  capture_start_lsn: s.capture?.origin === undefined ? null : Lsn.format(s.capture.origin),
  streaming_from: s.capture === undefined ? null : Lsn.format(s.capture.from),
  failover_ready: s.failoverReady ?? null,
  publication_problems: s.publicationProblems ?? []
})

export const health = (s: Snapshot): Answer => {
  const st = state(s)
  return { status: st === "failed" || st === "stopping" ? 503 : 200, contentType: "application/json", body: body(s, st) }
}

export const owner = (s: Snapshot): Answer => {
  const st = state(s)
  return { status: st === "active" ? 200 : 503, contentType: "application/json", body: body(s, st) }
}

const label = (value: string) => value.replaceAll("\\", "\\\\").replaceAll("\"", "\\\"").replaceAll("\n", "\\n")

export const metrics = (s: Snapshot): Answer => {
  const stream = `stream="${label(s.streamId)}"`
  const out: Array<string> = []
  const metric = (name: string, help: string, type: "gauge" | "counter", samples: ReadonlyArray<[string, number | bigint]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) out.push(`${name}{${labels}} ${value.toString()}`)
  }
  const current = state(s)
  metric("slotkeeper_state", "1 for this instance's current state", "gauge",
    (["starting", "waiting", "active", "stopping", "failed"] as const).map((st) => [`${stream},state="${st}"`, st === current ? 1 : 0]))
  metric("slotkeeper_capturing", "1 while this instance owns the stream and its replication connection streams", "gauge", [[stream, current === "active" ? 1 : 0]])
  if (s.capture?.origin !== undefined) {
    metric("slotkeeper_capture_start_lsn", "where the stream's slot was created: every transaction committing after it is delivered (WAL bytes)", "gauge", [[stream, s.capture.origin]])
  }
  if (s.failoverReady !== undefined) {
    metric("slotkeeper_failover_ready", "1 while every standby given has a sync-ready copy of the failover slot (a safe failover target)", "gauge", [[stream, s.failoverReady ? 1 : 0]])
  }
  metric("slotkeeper_ownership_epoch", "the fencing epoch this instance holds (0 when it holds none)", "gauge", [[stream, s.status._tag === "Active" ? s.status.epoch : 0]])
  if (s.acknowledgedLsn !== undefined) metric("slotkeeper_acknowledged_lsn", "the durable, acknowledged position (WAL bytes)", "gauge", [[stream, s.acknowledgedLsn]])
  if (s.slotName !== undefined && s.slot !== undefined) {
    const slot = `${stream},slot="${label(s.slotName)}"`
    if (s.slot.retainedBytes !== undefined) metric("slotkeeper_slot_retained_bytes", "WAL the slot retains behind the current position", "gauge", [[slot, s.slot.retainedBytes]])
    if (s.slot.flushLagBytes !== undefined) metric("slotkeeper_slot_lag_bytes", "bytes between the slot's confirmed position and the current position", "gauge", [[slot, s.slot.flushLagBytes]])
    metric("slotkeeper_slot_wal_status", "1 for the slot's wal_status", "gauge",
      (["reserved", "extended", "unreserved", "lost"] as const).map((w) => [`${slot},wal_status="${w}"`, s.slot!.walStatus === w ? 1 : 0]))
  }
  const problems = s.publicationProblems ?? []
  metric("slotkeeper_publication_problems", "what is wrong with the publication, by kind (TablesDiffer, TableRenamed, TableDropped, WritesWouldBreak, ...)", "gauge",
    [...new Set(problems.map((p) => p.code))].map((code) => [`${stream},code="${label(code)}"`, problems.filter((p) => p.code === code).length]))
  metric("slotkeeper_changes_delivered_total", "changes written to the sink", "counter", [[stream, s.changes]])
  metric("slotkeeper_transactions_delivered_total", "transactions written to the sink and acknowledged", "counter", [[stream, s.transactions]])
  metric("slotkeeper_errors_total", "errors logged by the stream (retried or fatal)", "counter", [[stream, s.errors]])
  return { status: 200, contentType: "text/plain; version=0.0.4", body: `${out.join("\n")}\n` }
}

/** Serves `health`, `owner` and `metrics` of `snapshot` on `port` (all interfaces), until the scope closes. */
export const serve = (port: number, snapshot: Effect.Effect<Snapshot>): Effect.Effect<void, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createServer>, Error>((resume) => {
      const server = createServer((request, response) => {
        const route = request.method === "GET" ? ({ "/health": health, "/health/owner": owner, "/metrics": metrics } as Record<string, (s: Snapshot) => Answer>)[request.url ?? ""] : undefined
        if (route === undefined) {
          response.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /health, /health/owner or /metrics\n")
          return
        }
        Effect.runPromise(snapshot).then((s) => {
          const answer = route(s)
          response.writeHead(answer.status, { "content-type": answer.contentType }).end(answer.body)
        }, () => response.writeHead(500).end())
      })
      server.once("error", (e) => resume(Effect.fail(new Error(`--http-port ${port}: ${e.message}`))))
      server.listen(port, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(Effect.asVoid)
