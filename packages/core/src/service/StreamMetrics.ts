/**
 * StreamMetrics: a stream's metrics as Effect `Metric`s, rendered in Prometheus's text format by Effect's own
 * exporter (`PrometheusMetrics` in `effect/observability`). Every series carries `stream="<id>"`.
 *
 * **Details**
 * - Two kinds. What *happens* — changes, transactions and bytes delivered, errors logged, how long the sink took and
 *   how old a transaction was when the sink had it — are counters and histograms updated where it happens
 *   (`delivered`, `countErrors`), in the program's `Metric.MetricRegistry`. What *is* — state, epoch, positions, the
 *   slot's `wal_status`, lag and `safe_wal_size`, failover readiness, the publication's problems — are gauges
 *   collected from a `StreamStatus` snapshot at each scrape, into a registry of their own made for that scrape: a
 *   series that no longer applies (a slot replaced, a problem fixed) disappears instead of keeping its last value.
 * - `prometheus` renders both; `HttpRoutes` serves it as `GET /metrics`.
 *
 * **Gotchas**
 * - Counters and histograms live in the registry of the context they are updated in (Effect's default is one per
 *   process): two streams in one process are told apart by their `stream` label; tests that want a clean slate
 *   provide a fresh `Metric.MetricRegistry`.
 * - A counter appears once it has been updated: `register` updates each by 0, so a scrape before the first change
 *   shows zeros rather than nothing.
 */
import { Effect, Logger, LogLevel, Metric } from "effect"
import { PrometheusMetrics } from "effect/observability"
import * as StreamStatus from "./StreamStatus.ts"

const changes = Metric.counter("slotkeeper_changes_delivered_total", { description: "changes written to the sink and acknowledged", incremental: true })
const transactions = Metric.counter("slotkeeper_transactions_delivered_total", { description: "transactions written to the sink and acknowledged", incremental: true })
const bytes = Metric.counter("slotkeeper_bytes_delivered_total", { description: "bytes of change lines written to the sink and acknowledged", incremental: true })
const errors = Metric.counter("slotkeeper_errors_total", { description: "warnings and errors logged by the stream (retried or fatal)", incremental: true })
const sinkSeconds = Metric.histogram("slotkeeper_sink_write_seconds", {
  description: "time to write a batch of lines to the sink and make it durable",
  boundaries: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
})
const commitToSink = Metric.histogram("slotkeeper_commit_to_sink_seconds", {
  description: "from a transaction's commit on the server to its being durable in the sink (the stream's lag, per batch, at its oldest transaction)",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
})
const backfillRows = Metric.counter("slotkeeper_backfill_rows_total", { description: "rows a backfill delivered (read lines), counted once durable downstream and saved as its progress", incremental: true })
const backfillSavedRows = Metric.gauge("slotkeeper_backfill_saved_rows", { description: "rows of the table's running or last backfill saved as its progress, by every owner (resumed backfills included)" })
const backfillEstimatedRows = Metric.gauge("slotkeeper_backfill_estimated_rows", { description: "PostgreSQL's estimate of the backfilled table's rows (pg_class.reltuples; -1: not analyzed yet)" })
const backfillRunning = Metric.gauge("slotkeeper_backfill_running", { description: "1 while this instance runs a backfill of the table" })
const startupAttempts = Metric.counter("slotkeeper_startup_attempts_total", { description: "failed attempts to reach the server while starting (waiting for it)", incremental: true })
const lagSeconds = Metric.gauge("slotkeeper_lag_seconds", { description: "how old the last delivered transaction was when the sink had it durable" })

const label = <I, S>(metric: Metric.Metric<I, S>, streamId: string) => Metric.withAttributes(metric, { stream: streamId })

/** A stream's labelled counters and histograms, made once per stream: `delivered` runs once per batch of events. */
const labelled = new Map<string, {
  readonly changes: Metric.Metric<number, unknown>
  readonly transactions: Metric.Metric<number, unknown>
  readonly bytes: Metric.Metric<number, unknown>
  readonly sinkSeconds: Metric.Metric<number, unknown>
  readonly commitToSink: Metric.Metric<number, unknown>
  readonly lagSeconds: Metric.Metric<number, unknown>
}>()
const of = (streamId: string) => {
  let m = labelled.get(streamId)
  if (m === undefined) {
    m = {
      changes: label(changes, streamId),
      transactions: label(transactions, streamId),
      bytes: label(bytes, streamId),
      sinkSeconds: label(sinkSeconds, streamId),
      commitToSink: label(commitToSink, streamId),
      lagSeconds: label(lagSeconds, streamId)
    }
    labelled.set(streamId, m)
  }
  return m
}

/** Makes the counters of `streamId` visible (at 0) before anything is delivered. */
export const register = (streamId: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const m = of(streamId)
    return Effect.forEach([m.changes, m.transactions, m.bytes, label(errors, streamId)], (metric) => Metric.update(metric, 0), { discard: true })
  })

export interface Delivered {
  readonly changes: number
  readonly transactions: number
  readonly bytes: number
  /** How long the sink took to write and commit them. */
  readonly sinkSeconds: number
  /** The commit time of the last transaction in them (PostgreSQL's, ISO 8601), if any: `slotkeeper_lag_seconds`. */
  readonly lastCommitTime?: string | undefined
  /** ... and of the first (the oldest): `slotkeeper_commit_to_sink_seconds` observes each batch at its worst. */
  readonly firstCommitTime?: string | undefined
}

/** A batch acknowledged: counted, its sink time and its lag observed. */
export const delivered = (streamId: string, d: Delivered): Effect.Effect<void> =>
  Effect.contextWith((context) => {
    const m = of(streamId)
    m.changes.updateUnsafe(d.changes, context)
    m.transactions.updateUnsafe(d.transactions, context)
    m.bytes.updateUnsafe(d.bytes, context)
    m.sinkSeconds.updateUnsafe(d.sinkSeconds, context)
    const now = Date.now()
    const committed = d.lastCommitTime === undefined ? Number.NaN : Date.parse(d.lastCommitTime)
    if (Number.isFinite(committed)) m.lagSeconds.updateUnsafe(Math.max(0, (now - committed) / 1000), context)
    // the histogram takes the batch's worst: its oldest transaction
    const oldest = d.firstCommitTime === undefined ? committed : Date.parse(d.firstCommitTime)
    if (Number.isFinite(oldest)) m.commitToSink.updateUnsafe(Math.max(0, (now - oldest) / 1000), context)
    return Effect.void
  })

/** Rows of a backfill of `table` (`schema.table`) delivered and saved as its progress. */
export const backfilled = (streamId: string, table: string, rows: number): Effect.Effect<void> =>
  Metric.update(Metric.withAttributes(backfillRows, { stream: streamId, table }), rows)

/**
 * A backfill of `table` on this instance: its rows saved so far (every owner's), PostgreSQL's estimate of the table's
 * rows, and whether it runs here — progress is saved / estimated, and the time left is
 * `(estimated - saved) / rate(slotkeeper_backfill_rows_total[5m])`.
 */
export const backfillProgress = (streamId: string, table: string, p: { readonly savedRows: number; readonly estimatedRows?: number | undefined; readonly running: boolean }): Effect.Effect<void> =>
  Effect.gen(function*() {
    const labels = { stream: streamId, table }
    yield* Metric.update(Metric.withAttributes(backfillSavedRows, labels), p.savedRows)
    if (p.estimatedRows !== undefined) yield* Metric.update(Metric.withAttributes(backfillEstimatedRows, labels), p.estimatedRows)
    yield* Metric.update(Metric.withAttributes(backfillRunning, labels), p.running ? 1 : 0)
  })

/** A failed attempt to reach the server while starting, counted. */
export const startupAttempt = (streamId: string): Effect.Effect<void> => Metric.update(label(startupAttempts, streamId), 1)

/** A logger that counts the stream's warnings and errors (`slotkeeper_errors_total`); add it to the program's loggers. */
export const countErrors = (streamId: string): Logger.Logger<unknown, void> => {
  const counter = label(errors, streamId)
  return Logger.make((options) => {
    if (LogLevel.isGreaterThanOrEqualTo(options.logLevel, "Warn")) counter.updateUnsafe(1, options.fiber.context)
  })
}

/** The gauges of a snapshot, set in the current registry. */
const collect = (s: StreamStatus.Snapshot): Effect.Effect<void> =>
  Effect.gen(function*() {
    const stream = { stream: s.streamId }
    const set = <A extends number | bigint>(name: string, description: string, value: A, attributes: Record<string, string> = {}) =>
      typeof value === "bigint"
        ? Metric.update(Metric.withAttributes(Metric.gauge(name, { description, bigint: true }), { ...stream, ...attributes }), value)
        : Metric.update(Metric.withAttributes(Metric.gauge(name, { description }), { ...stream, ...attributes }), value as number)
    const current = StreamStatus.state(s)
    for (const st of StreamStatus.states) yield* set("slotkeeper_state", "1 for this instance's current state", st === current ? 1 : 0, { state: st })
    yield* set("slotkeeper_capturing", "1 while this instance owns the stream and its replication connection streams", current === "active" ? 1 : 0)
    yield* set("slotkeeper_ownership_epoch", "the fencing epoch this instance holds (0 when it holds none)", s.status._tag === "Active" ? s.status.epoch : 0)
    if (s.capture?.origin !== undefined) {
      yield* set("slotkeeper_capture_start_lsn", "where the stream's slot was created: every transaction committing after it is delivered (WAL bytes)", s.capture.origin)
    }
    if (s.failoverReady !== undefined) {
      yield* set("slotkeeper_failover_ready", "1 while every standby given has a sync-ready copy of the failover slot (a safe failover target)", s.failoverReady ? 1 : 0)
    }
    if (s.acknowledgedLsn !== undefined) yield* set("slotkeeper_acknowledged_lsn", "the durable, acknowledged position (WAL bytes)", s.acknowledgedLsn)
    if (s.slotName !== undefined && s.slot !== undefined) {
      const slot = { slot: s.slotName }
      if (s.slot.retainedBytes !== undefined) yield* set("slotkeeper_slot_retained_bytes", "WAL the slot retains behind the current position", s.slot.retainedBytes, slot)
      if (s.slot.flushLagBytes !== undefined) yield* set("slotkeeper_slot_lag_bytes", "bytes between the slot's confirmed position and the current position", s.slot.flushLagBytes, slot)
      if (s.slot.safeWalSize !== undefined) yield* set("slotkeeper_slot_safe_wal_size_bytes", "WAL that can still be written before the slot is lost (max_slot_wal_keep_size)", s.slot.safeWalSize, slot)
      if (s.slot.idleTimeoutLeftSeconds !== undefined) {
        yield* set("slotkeeper_slot_idle_timeout_left_seconds", "seconds before idle_replication_slot_timeout lets the server invalidate the inactive slot (PostgreSQL 18+)", s.slot.idleTimeoutLeftSeconds, slot)
      }
      for (const w of ["reserved", "extended", "unreserved", "lost"]) {
        yield* set("slotkeeper_slot_wal_status", "1 for the slot's wal_status", s.slot.walStatus === w ? 1 : 0, { ...slot, wal_status: w })
      }
    }
    for (const session of s.sessions ?? []) {
      yield* set("slotkeeper_session_encrypted", "1 when the session is encrypted (TLS), by the server's pg_stat_ssl", session.encrypted ? 1 : 0, { session: session.role, pid: String(session.pid) })
    }
    for (const reason of ["NoReplicaIdentity", "Privilege", "Unlogged"] as const) {
      const n = (s.unpublished ?? []).filter((t) => t.reason === reason).length
      if (n > 0) yield* set("slotkeeper_tables_unpublished", "tables of the stream's schemas left out of the publication, by why (they would break the application's writes, or are another role's)", n, { reason })
    }
    const problems = s.publicationProblems ?? []
    for (const code of new Set(problems.map((p) => p.code))) {
      yield* set("slotkeeper_publication_problems", "what is wrong with the publication, by kind (TablesDiffer, TableRenamed, TableDropped, WritesWouldBreak, ...)",
        problems.filter((p) => p.code === code).length, { code })
    }
  })

/** Prometheus text: the snapshot's gauges (collected for this scrape) and the program's counters and histograms. */
export const prometheus = (s: StreamStatus.Snapshot): Effect.Effect<string> => prometheusOf([s])

/** Prometheus text of several streams (a fleet's runner): each snapshot's gauges, labelled by its stream, then the program's. */
export const prometheusOf = (snapshots: ReadonlyArray<StreamStatus.Snapshot>): Effect.Effect<string> =>
  Effect.gen(function*() {
    const gauges = yield* Effect.andThen(Effect.forEach(snapshots, collect, { discard: true }), PrometheusMetrics.format()).pipe(Effect.provideService(Metric.MetricRegistry, new Map()))
    const events = yield* PrometheusMetrics.format()
    return gauges + events
  })
