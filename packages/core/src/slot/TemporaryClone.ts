/**
 * TemporaryClone: streaming from a temporary copy of the stream's persistent slot, made on the replication session
 * itself, so that a crashed or half-open instance can never block the next one.
 *
 * **Why**: a walsender holds the slot it streams from (`active_pid`). If an instance crashes or its path goes half-open,
 * the server keeps that walsender — and the slot — until it notices, and the next instance fails with
 * "replication slot ... is active for PID" (SQLSTATE 55006) for as long. Streaming from a copy avoids that: the
 * persistent slot is never held by a walsender, and each connection's copy is `temporary`, so PostgreSQL drops it
 * when that session ends, for whatever reason.
 *
 * **Details**
 *
 * `pg_copy_logical_replication_slot(persistent, clone, true)` runs on the replication connection before
 * `START_REPLICATION`, so the copy belongs to that session. The copy starts at the persistent slot's position
 * (restart_lsn and confirmed_flush). It is never a failover slot (temporary slots cannot be): only the persistent
 * slot is, which is why it must be advanced often (see `AdvanceTarget`). A replication session speaks only the simple
 * query protocol, so the slot names — slotkeeper's own, `[a-z0-9_]` — are checked and embedded, never user text.
 */
import { randomBytes } from "node:crypto"
import type { Client } from "pg"

const slotNamePattern = /^[a-z0-9_]{1,63}$/

/** A fresh, unique name for one connection's temporary copy. */
export const cloneName = (): string => `slotkeeper_t_${randomBytes(8).toString("hex")}`

/**
 * Copies `persistentSlot` into `clone`, a temporary slot of the replication session `client` — before
 * `START_REPLICATION` on `clone`. What `ReplicationStream` runs for every connection in temporary mode.
 */
export const copy = async (client: Client, persistentSlot: string, clone: string): Promise<void> => {
  // slotkeeper's own names only: the session speaks the simple query protocol, so they are embedded
  for (const name of [persistentSlot, clone]) {
    if (!slotNamePattern.test(name)) throw new Error(`not a slotkeeper slot name: ${JSON.stringify(name)}`)
  }
  await client.query(`SELECT slot_name FROM pg_copy_logical_replication_slot('${persistentSlot}', '${clone}', true)`)
}
