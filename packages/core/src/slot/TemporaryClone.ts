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
import { PgoutputPlugin } from "pg-logical-replication"

type PgoutputOptions = ConstructorParameters<typeof PgoutputPlugin>[0]

const slotNamePattern = /^[a-z0-9_]{1,63}$/

/** A fresh, unique name for one connection's temporary copy. */
export const cloneName = (): string => `slotkeeper_t_${randomBytes(8).toString("hex")}`

export class ClonedSlotPlugin extends PgoutputPlugin {
  readonly persistentSlot: string
  readonly clone: string

  constructor(options: PgoutputOptions & { readonly persistentSlot: string; readonly clone?: string }) {
    super(options)
    const clone = options.clone ?? cloneName()
    for (const name of [options.persistentSlot, clone]) {
      if (!slotNamePattern.test(name)) throw new Error(`not a slotkeeper slot name: ${JSON.stringify(name)}`)
    }
    this.persistentSlot = options.persistentSlot
    this.clone = clone
  }

  /** Copies the persistent slot into this session's temporary slot, then streams from the copy. */
  override async start(client: Client, _slotName: string, lastLsn: string): Promise<unknown> {
    await client.query(`SELECT slot_name FROM pg_copy_logical_replication_slot('${this.persistentSlot}', '${this.clone}', true)`)
    return super.start(client, this.clone, lastLsn)
  }
}
