/**
 * @slotkeeper/testkit: real PostgreSQL servers for tests, as scoped Effect resources.
 *
 * - `PgCluster`: an ephemeral server (initdb in a temp folder, free port, wal_level=logical), with restart, crash,
 *   stop, terminateBackend and setConfig.
 * - `Standby`: a streaming physical standby with failover-slot synchronization (17+), and promote.
 * - `FaultProxy`: a TCP proxy that can blackhole (half-open partition), reset, or delay connections.
 * - `ProcessControl`: SIGSTOP / SIGCONT a process for pause scenarios.
 * - `PgVersions`: run a test file against several major versions (`SLOTKEEPER_PG_VERSIONS`, default 18).
 * - `EmbeddedPostgres`: a server whose data survives restarts (the CLI's default database).
 * - `DeliveryCheck`: the lost and the wrongly duplicated changes of a consumer's deliveries.
 * - `FencingReceiver`: a reference HTTP receiver for slotkeeper's http sink that enforces the fencing token (409 for
 *   a deposed owner) and records what it accepted and refused.
 * - `TlsCertificates`: a private CA, a server certificate and client certificates (openssl), for TLS as users run it.
 * - `PgBouncer`: a real PgBouncer (transaction pooling) in front of a test server.
 * - `Wait`: polling in wall-clock time until something holds.
 * - `PgBinaries`, `ServerUser`, `PgServer`, `Leftovers`: the parts they are made of.
 */
export * as DeliveryCheck from "./DeliveryCheck.ts"
export * as FaultProxy from "./FaultProxy.ts"
export * as FencingReceiver from "./FencingReceiver.ts"
export * as Leftovers from "./Leftovers.ts"
export * as PgBouncer from "./PgBouncer.ts"
export * as PgCluster from "./PgCluster.ts"
export * as PgVersions from "./PgVersions.ts"
export * as ProcessControl from "./ProcessControl.ts"
export * as Standby from "./Standby.ts"
export * as TlsCertificates from "./TlsCertificates.ts"
export * as Wait from "./Wait.ts"
// the server itself, from @slotkeeper/embedded (where the quick start's embedded PostgreSQL lives too)
export { EmbeddedPostgres, PgBinaries, PgServer, ServerUser } from "@slotkeeper/embedded"
