/**
 * StreamId: the name of one replication stream, and everything slotkeeper derives from it.
 *
 * A stream id is `[a-z0-9_]{1,40}`. It is short and plain on purpose: it becomes part of a replication slot name, a
 * publication name and an `application_name`, all of which PostgreSQL limits to 63 bytes, and a lowercase
 * identifier needs no quoting anywhere. Anything else is a configuration error that says what to change.
 *
 * **Derived names**
 * - slot: `slotkeeper_<stream>_<incarnation>` (the incarnation is added by the slot component; a slot name is never
 *   reused, because slot synchronization to standbys matches slots by name only);
 * - publication: `slotkeeper_<stream>`;
 * - advisory lock keys: the two-int form `(namespace, key)`. `namespace` is a fixed slotkeeper constant per lock
 *   (ownership, guarded writes); `key` is a 32-bit FNV-1a hash of `<database>/<stream>`. A bare
 *   `hashtext(name)` is avoided: its value is not guaranteed stable across PostgreSQL versions and it shares one
 *   key space with every other application's locks.
 * - `application_name`: `slotkeeper:<stream>:<instance>:<role>`, so `pg_stat_activity` shows who is who.
 *
 * The FNV-1a hashes and their inputs are a persistent wire format (two instances of different versions must
 * compute the same keys): they must never change.
 */
import { Schema } from "effect"

export class InvalidStreamId extends Schema.TaggedError<InvalidStreamId>()("InvalidStreamId", {
  streamId: Schema.String,
  message: Schema.String
}) {}

export class InvalidInstanceId extends Schema.TaggedError<InvalidInstanceId>()("InvalidInstanceId", {
  instanceId: Schema.String,
  message: Schema.String
}) {}

const streamIdPattern = /^[a-z0-9_]{1,40}$/
const instanceIdPattern = /^[A-Za-z0-9_.-]{1,64}$/

/** 32-bit FNV-1a over the UTF-8 bytes of `text`, as a signed int4. Part of the lock-key wire format. */
export const fnv1a32 = (text: string): number => {
  const bytes = new TextEncoder().encode(text)
  let hash = 0x811c9dc5
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193)
  return hash | 0
}

/** The advisory lock namespace (first int4) of the stream ownership lock (session level). */
export const OWNERSHIP_LOCK_NAMESPACE: number = fnv1a32("slotkeeper:ownership")
/** The advisory lock namespace of guarded writes (transaction level). */
export const WRITE_LOCK_NAMESPACE: number = fnv1a32("slotkeeper:guarded-write")
/** The advisory lock namespace that serialises slotkeeper's own schema setup. */
export const SCHEMA_LOCK_NAMESPACE: number = fnv1a32("slotkeeper:schema")

export interface LockKey {
  /** First int4 of `pg_advisory_lock(int4, int4)`; `pg_locks.classid` (as unsigned oid). */
  readonly namespace: number
  /** Second int4; `pg_locks.objid` (as unsigned oid). */
  readonly key: number
}

export interface StreamIdentity {
  readonly streamId: string
  readonly database: string
  readonly publicationName: string
  /** Prefix of the stream's slot names; the slot component appends `_<incarnation>`. */
  readonly slotPrefix: string
  readonly ownershipLock: LockKey
  readonly writeLock: LockKey
}

/** Checks a stream id, with a message that says what to change. */
export const validate = (streamId: string): InvalidStreamId | undefined =>
  streamIdPattern.test(streamId) ? undefined : new InvalidStreamId({
    streamId,
    message: `stream id ${JSON.stringify(streamId)} is not valid: use 1 to 40 characters from a-z, 0-9 and _ ` +
      `(it becomes part of slot, publication and session names)`
  })

export const validateInstanceId = (instanceId: string): InvalidInstanceId | undefined =>
  instanceIdPattern.test(instanceId) ? undefined : new InvalidInstanceId({
    instanceId,
    message: `instance id ${JSON.stringify(instanceId)} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, _, . and -`
  })

/** The identity of `streamId` in `database`; the stream id must be valid (see `validate`). */
export const identity = (database: string, streamId: string): StreamIdentity => {
  const key = fnv1a32(`${database}/${streamId}`)
  return {
    streamId,
    database,
    publicationName: `slotkeeper_${streamId}`,
    slotPrefix: `slotkeeper_${streamId}`,
    ownershipLock: { namespace: OWNERSHIP_LOCK_NAMESPACE, key },
    writeLock: { namespace: WRITE_LOCK_NAMESPACE, key }
  }
}

export type SessionRole = "lock" | "guard" | "repl" | "admin" | "backfill"

/**
 * `slotkeeper:<stream>:<instance>:<role>`, at most 63 bytes (PostgreSQL truncates longer names silently): the
 * instance part is shortened to fit, keeping its end, which is usually the distinguishing part (a pod suffix).
 */
export const applicationName = (streamId: string, instanceId: string, role: SessionRole): string => {
  const fixed = `slotkeeper:${streamId}::${role}`
  const room = 63 - fixed.length
  const instance = instanceId.length <= room ? instanceId : instanceId.slice(instanceId.length - room)
  return `slotkeeper:${streamId}:${instance}:${role}`
}

/** Unsigned form of an int4 lock key part, as `pg_locks.classid` / `objid` show it. */
export const asOid = (int4: number): number => int4 >>> 0
