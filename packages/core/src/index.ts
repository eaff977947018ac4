/**
 * @slotkeeper/core — exclusive, fenced ownership of a PostgreSQL logical replication stream, as Effect layers.
 *
 * Today: the stream's identity and ownership (see shared/docs/architecture-sketch.md for the whole shape).
 * - `SessionSettings`: the settings every session pins (values print the same whatever the database says).
 * - `StreamId`: stream id validation, derived names, lock keys, application_name.
 * - `StreamOwnership.make(options)`: checked configuration, pool, ownership table and a `Supervisor` over an
 *   `AdvisoryLock` (default) or a `LeaseLock`.
 * - `Supervisor.run(owned)`: runs `owned` only while this instance owns the stream, with the `Ownership` service
 *   (`guarded` writes) in scope; losing ownership interrupts it.
 * - `Liveness`, `OwnershipConfig`: the pure decisions, exported for tests and tools.
 *
 * - `slot/`: the stream's persistent slot (`PersistentSlot`: create or adopt, guarded advance), its per-connection
 *   temporary copy (`TemporaryClone`), reading and judging its row (`SlotInspector`, `Health`), the resume decision
 *   (`Resume`, fed by `ServerIdentity`), `AdvanceTarget`, `FailoverCheck`, `SlotCleanup`, and `SlotManager`, which
 *   runs them inside the owned scope (create or adopt, health polling, guarded advances to the saved checkpoint).
 * - `replication/`: `ReplicationStream` (one replication connection: resume checks, protocol 2 with in-progress
 *   streaming, events with backpressure, acknowledgements, exact status updates, idle heartbeats), `Pgoutput` (the
 *   decoder), `Values` (the documented value mapping), `Assembler` (commit order, positions inside transactions),
 *   `Spool` (streamed transactions on disk until commit), `Watermark` (the pure decision of what may be saved and
 *   reported), `Checkpoint` (the `CheckpointStore` of the durable position and its identity), and `Delivery`, which
 *   runs slot, checkpoint and connection together as a stream's owned work (`Delivery.layer`: all of it as a layer).
 *
 * - `sink/`: `SinkDelivery` (a connection's changes written to a sink as NDJSON lines — `Ndjson` — and acknowledged
 *   once durable: what `slotkeeper run` runs), the sinks it writes to (`Sink`: the contract and stdout; `FileSink`
 *   with `FileLock`; `HttpSink`), `FencedSink`, the contract of a sink that refuses a deposed owner (the ownership
 *   epoch with every write), and `PgTargetSink`, a worked example in a PostgreSQL target (fenced, position kept with
 *   the data). `Redact` keeps passwords out of every message.
 * - `service/`: what a running stream shows — `StreamStatus` (the health decision and the snapshot service),
 *   `StreamMetrics` (Effect `Metric`s, Prometheus text by Effect's exporter), `HttpRoutes` (`/health`,
 *   `/health/owner`, `/metrics` on Effect's `HttpRouter`).
 * - `publication/`: `PublicationManager` (the actor: subscriptions in, one debounced guarded reconcile per batch,
 *   drift checks), its real backend `PgPublication`, `Validation` (PostgreSQL checks a subscription before anything
 *   changes), and the pure `Subscription` (lexical checks, quoting) and `Desired` (desired set, minimal plan).
 */
export * as AdvisoryLock from "./ownership/AdvisoryLock.ts"
export * as LeaseLock from "./ownership/LeaseLock.ts"
export * as Liveness from "./ownership/Liveness.ts"
export * as LockBackend from "./ownership/LockBackend.ts"
export { Ownership, OwnershipLost, type OwnershipService, type OwnershipStatus } from "./ownership/Ownership.ts"
export * as OwnershipConfig from "./ownership/OwnershipConfig.ts"
export * as OwnershipTable from "./ownership/OwnershipTable.ts"
export * as StreamOwnership from "./ownership/StreamOwnership.ts"
export * as Supervisor from "./ownership/Supervisor.ts"
export * as SessionSettings from "./SessionSettings.ts"
export * as StreamId from "./StreamId.ts"
export * as Lsn from "./Lsn.ts"
export * as Processes from "./Processes.ts"
export * as AdvanceTarget from "./slot/AdvanceTarget.ts"
export * as FailoverCheck from "./slot/FailoverCheck.ts"
export * as Health from "./slot/Health.ts"
export * as PersistentSlot from "./slot/PersistentSlot.ts"
export * as Resume from "./slot/Resume.ts"
export * as ServerIdentity from "./slot/ServerIdentity.ts"
export * as SlotCleanup from "./slot/SlotCleanup.ts"
export * as SlotInspector from "./slot/SlotInspector.ts"
export * as SlotManager from "./slot/SlotManager.ts"
export * as TemporaryClone from "./slot/TemporaryClone.ts"
export * as Assembler from "./replication/Assembler.ts"
export * as Checkpoint from "./replication/Checkpoint.ts"
export * as Delivery from "./replication/Delivery.ts"
export * as Pgoutput from "./replication/Pgoutput.ts"
export * as ReplicationStream from "./replication/ReplicationStream.ts"
export * as Spool from "./replication/Spool.ts"
export * as Values from "./replication/Values.ts"
export * as Watermark from "./replication/Watermark.ts"
export * as Desired from "./publication/Desired.ts"
export * as PgPublication from "./publication/PgPublication.ts"
export * as PublicationCatalog from "./publication/PublicationCatalog.ts"
export * as PublicationManager from "./publication/PublicationManager.ts"
export * as Subscription from "./publication/Subscription.ts"
export * as Validation from "./publication/Validation.ts"
export * as Preflight from "./Preflight.ts"
export * as FencedSink from "./sink/FencedSink.ts"
export * as FileSink from "./sink/FileSink.ts"
export * as HttpSink from "./sink/HttpSink.ts"
export * as Ndjson from "./sink/Ndjson.ts"
export * as Sink from "./sink/Sink.ts"
export * as SinkDelivery from "./sink/SinkDelivery.ts"
export * as Redact from "./Redact.ts"
export * as HttpRoutes from "./service/HttpRoutes.ts"
export * as StreamMetrics from "./service/StreamMetrics.ts"
export * as StreamStatus from "./service/StreamStatus.ts"
export * as PgTargetSink from "./sink/PgTargetSink.ts"
