/**
 * @slotkeeper/core — exclusive, fenced ownership of a PostgreSQL logical replication stream, as Effect layers.
 *
 * Nothing is exported yet: the foundation issue only lays out the workspace. The modules arrive with their issues,
 * each with the why of its design at its top (see shared/docs/architecture-sketch.md):
 *
 * - `ownership/`   Ownership (service + guard), AdvisoryLock, LeaseLock, and the pure liveness and lease decisions;
 * - `slot/`        the persistent slot and its per-connection temporary clone, guarded advance, health, resume check;
 * - `publication/` the publication actor and the pure desired-publication computation;
 * - `replication/` the pgoutput stream, decoding, transaction assembly, acknowledgement watermark, Checkpoint.
 */
export {}
