/**
 * @slotkeeper/core — exclusive, fenced ownership of a PostgreSQL logical replication stream, as Effect layers.
 *
 * What an app composes (the README's "Using ownership in an Effect app" shows it, and CI compiles that example):
 * - **Ownership** — `StreamOwnership.make` / `.layer` (configuration checked, the server and the subscriptions
 *   admitted, a pool, slotkeeper's tables, a `Supervisor` over an `AdvisoryLock` or a `LeaseLock`);
 *   `Supervisor.run(owned)` runs work only while this instance owns the stream, with `Ownership` (`guarded` writes,
 *   `assertFresh`, the epoch) in scope; `OwnershipConfig` (the timing rules), `StreamId`, `SessionSettings`;
 *   `OwnershipTable` and `LockBackend` for their errors (setup, a lock session).
 * - **Connections** — `ConnectionSpec` (a connection string by libpq's rules: URL or keyword form, `PG*` environment,
 *   password file), `Connector` (the options of every session slotkeeper opens, TLS as libpq's `sslmode` means it),
 *   `ConnectFailure` (whether a failed connection may pass, or what to change), `SharedPools` (one pool per
 *   database for the streams of one process: a fleet).
 * - **The stream** — `Delivery.run` / `.layer` (slot, checkpoint and replication connection as the owner's work),
 *   its events and errors (`ReplicationStream`, `Checkpoint`, `Watermark`), `Values` (the value mapping), `Lsn`.
 * - **Publication** — `PublicationManager` over `PgPublication`, `Subscription` (what a subscription is, its lexical
 *   checks), `Validation` and `Preflight` (PostgreSQL's own checks before anything changes, `WriteSafety` among
 *   them), `PublicationCatalog`.
 * - **Slots** — `SlotManager` (create or adopt, health, guarded advances), `SlotInspector` and `Health`,
 *   `FailoverCheck`, `SlotCleanup`, `PersistentSlot`.
 * - **Sinks** — `SinkDelivery` (a connection's changes to a sink as NDJSON lines — `Ndjson` — acknowledged once
 *   durable: what `slotkeeper run` runs), `Sink` (the contract, stdout), `FileSink` (with `FileLock`), `HttpSink`,
 *   `FencedSink` (the fencing contract a sink keeps), `PgTargetSink` (a worked example); `Redact`.
 * - **Backfills** — `Backfill` (a table's existing rows as `read` changes inside the stream, placed exactly:
 *   `Delivery`'s `backfill` option runs it), `BackfillProgress` (requests, and progress saved by guarded writes),
 *   `ChunkReader` (what is read, what is refused), `ChunkWindow` (the placement decision).
 * - **Fleets** — `Fleet` (many streams over many runners: each runs on the runner `FleetPlacement` gives it —
 *   balanced to ±1 over the live runners of `Membership`, `effect/cluster`'s — under slotkeeper's own ownership),
 *   `FleetPlan` (what a change starts and stops), `FleetRoutes` (`/health`, `/streams`, `/metrics` of a runner).
 * - **Service** — `StreamStatus` (the health decision), `StreamMetrics` (Effect `Metric`s, Prometheus text by
 *   Effect's exporter), `HttpRoutes` (`/health`, `/health/owner`, `/metrics` on Effect's `HttpRouter`).
 *
 * Internal, not exported (each is its module's concern, tested in this package): the pgoutput decoder (`Pgoutput`),
 * commit ordering (`Assembler`), the disk spool of streamed transactions (`Spool`), the temporary clone
 * (`TemporaryClone`), the resume decision and its inputs (`Resume`, `ServerIdentity`), `AdvanceTarget`,
 * `Liveness`, `Desired`, `Processes`. The package's `exports` allow only this entry point.
 */
export * as ConnectFailure from "./connection/ConnectFailure.ts"
export * as ConnectionSpec from "./connection/ConnectionSpec.ts"
export * as Connector from "./connection/Connector.ts"
export * as ReplicationReach from "./connection/ReplicationReach.ts"
export * as SharedPools from "./connection/SharedPools.ts"
export * as AdvisoryLock from "./ownership/AdvisoryLock.ts"
export * as LeaseLock from "./ownership/LeaseLock.ts"
export * as LockBackend from "./ownership/LockBackend.ts"
export { Ownership, OwnershipLost, type OwnershipStatus } from "./ownership/Ownership.ts"
export * as OwnershipConfig from "./ownership/OwnershipConfig.ts"
export * as OwnershipTable from "./ownership/OwnershipTable.ts"
export * as StreamOwnership from "./ownership/StreamOwnership.ts"
export * as Supervisor from "./ownership/Supervisor.ts"
export * as SessionSettings from "./SessionSettings.ts"
export * as StreamId from "./StreamId.ts"
export * as Lsn from "./Lsn.ts"
export * as FailoverCheck from "./slot/FailoverCheck.ts"
export * as Health from "./slot/Health.ts"
export * as PersistentSlot from "./slot/PersistentSlot.ts"
export * as SlotCleanup from "./slot/SlotCleanup.ts"
export * as SlotInspector from "./slot/SlotInspector.ts"
export * as SlotManager from "./slot/SlotManager.ts"
export * as Checkpoint from "./replication/Checkpoint.ts"
export * as Delivery from "./replication/Delivery.ts"
export * as ReplicationStream from "./replication/ReplicationStream.ts"
export * as Values from "./replication/Values.ts"
export * as Watermark from "./replication/Watermark.ts"
export * as PgPublication from "./publication/PgPublication.ts"
export * as PublicationCatalog from "./publication/PublicationCatalog.ts"
export * as PublicationManager from "./publication/PublicationManager.ts"
export * as SchemaTables from "./publication/SchemaTables.ts"
export * as Subscription from "./publication/Subscription.ts"
export * as Validation from "./publication/Validation.ts"
export * as Preflight from "./Preflight.ts"
export * as FencedSink from "./sink/FencedSink.ts"
export * as FileSink from "./sink/FileSink.ts"
export * as HttpSink from "./sink/HttpSink.ts"
export * as Ndjson from "./sink/Ndjson.ts"
export * as Sink from "./sink/Sink.ts"
export * as SessionSecurity from "./service/SessionSecurity.ts"
export * as SinkDelivery from "./sink/SinkDelivery.ts"
export * as Redact from "./Redact.ts"
export * as HttpRoutes from "./service/HttpRoutes.ts"
export * as StreamMetrics from "./service/StreamMetrics.ts"
export * as StreamStatus from "./service/StreamStatus.ts"
export * as PgTargetSink from "./sink/PgTargetSink.ts"
export * as Backfill from "./backfill/Backfill.ts"
export * as BackfillProgress from "./backfill/BackfillProgress.ts"
export * as ChunkReader from "./backfill/ChunkReader.ts"
export * as ChunkWindow from "./backfill/ChunkWindow.ts"
export * as Fleet from "./fleet/Fleet.ts"
export * as FleetPlacement from "./fleet/FleetPlacement.ts"
export * as FleetPlan from "./fleet/FleetPlan.ts"
export * as FleetRoutes from "./fleet/FleetRoutes.ts"
export * as Membership from "./fleet/Membership.ts"
