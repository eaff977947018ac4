/**
 * StandbyGate: what the standbys named in `synchronized_standby_slots` have flushed — so that a stream read from a
 * temporary copy of its failover slot delivers nothing a promoted standby would not have.
 *
 * **Why**: on PostgreSQL 17+ the walsender of a *failover* slot sends a change only once every physical slot in
 * `synchronized_standby_slots` has confirmed the WAL it is in. A temporary copy of that slot (one per connection, so
 * that a dead instance never blocks the next) cannot be a failover slot, and its walsender does not wait: with a
 * standby behind, the consumer would receive transactions the standby never got. After a promotion those are gone —
 * delivered phantoms — and the new timeline reuses their LSNs, so an LSN-based dedupe would then drop real changes.
 * The stream applies the same wait itself: a transaction goes to the consumer only once the standbys have flushed its
 * commit record (`ReplicationStream`), and a position is saved only up to what they have.
 *
 * **What it guarantees**: `reached(lsn)` resolves only once every named slot exists, is physical, is valid and has a
 * `restart_lsn` (its standby's flush position) at or past `lsn` — as PostgreSQL's own wait, a missing or invalid
 * standby slot holds the stream (and `FailoverCheck` says so). With no slot named it resolves at once: nothing
 * synchronizes the failover slot then, and nothing is held back.
 *
 * **Details**: the standbys' positions are polled only while something waits, from every 5 ms (a standby is usually a
 * few milliseconds behind) backing off to 200 ms; a failed read is tried again at the next poll. A reading that named
 * no standby is trusted for a second, so a setting changed later is seen within about that.
 */
import { Duration, Effect, Schedule, type Scope } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as Lsn from "../Lsn.ts"

/** What the named standbys have flushed: `unlimited` when none is named, `undefined` while one is missing or invalid. */
export type Flushed = Lsn.Lsn | "unlimited" | undefined

/** Reads the named standbys' flush position once. */
export const read = (sql: SqlClient): Effect.Effect<Flushed, SqlError> =>
  Effect.map(
    sql.unsafe<{ named: number; found: number; flushed: string | null }>(
      `SELECT count(n.name)::int AS named, count(s.restart_lsn)::int AS found, min(s.restart_lsn)::text AS flushed
         FROM (SELECT btrim(name) AS name FROM unnest(string_to_array(current_setting('synchronized_standby_slots', true), ',')) AS name
                WHERE btrim(name) <> '') n
         LEFT JOIN pg_replication_slots s ON s.slot_name = n.name AND s.slot_type = 'physical' AND s.invalidation_reason IS NULL`
    ),
    ([row]): Flushed => {
      if (row === undefined || row.named === 0) return "unlimited"
      return row.found === row.named && row.flushed !== null ? Lsn.parseUnsafe(row.flushed) : undefined
    }
  )

/** Whether the named standbys have flushed `lsn`. */
export const covers = (flushed: Flushed, lsn: Lsn.Lsn): boolean => flushed === "unlimited" || (flushed !== undefined && flushed >= lsn)

export interface StandbyGate {
  /** Resolves once the named standbys have flushed up to `lsn` (see the module comment); never rejects. */
  readonly reached: (lsn: Lsn.Lsn) => Promise<void>
  /** The primary's WAL flush position now: past the commit of every transaction decoded so far. */
  readonly flushNow: () => Promise<Lsn.Lsn>
}

interface Waiter {
  readonly lsn: Lsn.Lsn
  readonly resolve: () => void
}

/** A gate polling through `sql`, for as long as the scope is open (pending waits then never resolve). */
export const make = (sql: SqlClient): Effect.Effect<StandbyGate, never, Scope.Scope> =>
  Effect.gen(function*() {
    let known: Flushed = undefined
    let readAt = 0
    const waiters: Array<Waiter> = []
    let wake: (() => void) | undefined

    const settle = () => {
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!
        if (covers(known, w.lsn)) {
          waiters.splice(i, 1)
          w.resolve()
        }
      }
    }

    // polls while anyone waits; sleeps on `wake` otherwise
    yield* Effect.forkScoped(Effect.gen(function*() {
      let pause = 5
      for (;;) {
        if (waiters.length === 0) {
          yield* Effect.callback<void>((resume) => {
            wake = () => {
              wake = undefined
              resume(Effect.void)
            }
            return Effect.sync(() => { wake = undefined })
          })
        }
        const before = known
        known = yield* read(sql).pipe(Effect.orElseSucceed(() => known))
        readAt = Date.now()
        settle()
        if (waiters.length === 0) continue
        pause = known !== before ? 5 : Math.min(200, pause * 2)
        yield* Effect.sleep(Duration.millis(pause))
      }
    }))

    // a read that fails (the server restarting) is tried again; the replication connection fails meanwhile anyway
    const retried = <A>(effect: Effect.Effect<A, SqlError>) => Effect.runPromise(Effect.retry(effect, Schedule.spaced("200 millis")))
    return {
      reached: (lsn) => {
        if (covers(known, lsn) && (known !== "unlimited" || Date.now() - readAt < 1_000)) return Promise.resolve()
        return new Promise<void>((resolve) => {
          waiters.push({ lsn, resolve })
          wake?.()
        })
      },
      flushNow: () =>
        retried(Effect.map(sql.unsafe<{ lsn: string }>("SELECT pg_current_wal_flush_lsn()::text AS lsn"), ([row]) => Lsn.parseUnsafe(row!.lsn)))
    } satisfies StandbyGate
  })
