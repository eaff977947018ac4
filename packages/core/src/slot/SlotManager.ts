/**
 * SlotManager: the stream's persistent slot, kept while this instance owns the stream — created or adopted, watched,
 * and moved forward to what the consumer acknowledged.
 *
 * Run it inside the owned scope (`Supervisor.run`), next to the other components:
 * `Effect.all([SlotManager.run(...), stream], { concurrency: "unbounded" })`. A fatal slot error then fails the owned
 * work and interrupts its siblings, structurally, and losing ownership interrupts it.
 *
 * **What it guarantees**
 * - The slot is advanced only through `PersistentSlot.advance` (guarded), on a timer and once more when it stops, to
 *   `AdvanceTarget.target` of the acknowledged position: never backwards, never past what was acknowledged, keeping
 *   the resumable window — and only by acknowledgements of the current slot (an acknowledgement carries its slot).
 * - Stopping is bounded: the last advance gets `finalAdvanceTimeout` (default 1 second), on the server and here, and
 *   what it does not reach is left to the next owner — a slot behind the durable position only costs that owner some
 *   decoding it skips (`Resume`), while a stop that waits on a long advance holds the process (and a successor) back.
 * - Its health is polled on a timer into `status`; warnings are logged when they appear.
 * - A failover slot (PostgreSQL 17+) *settles* first: a standby's synchronized copy becomes usable only once the slot
 *   has moved past where that standby started, which on a quiet stream would wait for the next idle save (up to a
 *   minute). While settling, the stream saves idle progress every second (`ReplicationStream`), the slot follows at
 *   once, and a running-transactions record is logged where the role may (`pg_log_standby_snapshot`), so a new stream
 *   is a safe failover target within seconds. With `standbys` given, their copies are checked (`FailoverCheck`) into
 *   `failoverReady`, and settling ends when all are ready; without, it ends after a minute and readiness is unknown.
 * - A slot that is invalidated or gone is a `SlotError` with policy `fail` (default): the owned work fails with an
 *   explanation of what was lost. With `recreate`, the old incarnation is retired, a new one is created (never under
 *   the old name), and `resyncRequired` says so: consumers must resync, because changes between were lost.
 */
import { randomBytes } from "node:crypto"
import { PgClient, PgConnection } from "@effect/sql-pg"
import { Cause, Context, Duration, Effect, Layer, type Redacted, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql"
import * as Rounds from "../internal/rounds.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import { format as formatLsn, type Lsn } from "../Lsn.ts"
import * as Connector from "../connection/Connector.ts"
import * as SessionSettings from "../SessionSettings.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import { Ownership, type OwnershipLost } from "../ownership/Ownership.ts"
import * as AdvanceTarget from "./AdvanceTarget.ts"
import * as FailoverCheck from "./FailoverCheck.ts"
import * as Health from "./Health.ts"
import * as PersistentSlot from "./PersistentSlot.ts"
import * as SlotInspector from "./SlotInspector.ts"
import * as StandbyGate from "./StandbyGate.ts"
import * as Retry from "../internal/retry.ts"

/** A durable, acknowledged position, and the slot it was read from: positions of one slot mean nothing in another. */
export interface Acknowledged {
  readonly lsn: Lsn
  readonly slotName: string
  /**
   * Where the save of this position is in the source server's WAL, when it was saved there (see
   * `Checkpoint.SaveReceipt`): a failover slot is advanced to it only once the synchronized standbys have it.
   */
  readonly savedAt?: Lsn | undefined
}

export interface SlotManagerOptions extends PersistentSlot.PersistentSlotOptions {
  readonly sql: SqlClient.SqlClient
  /**
   * The consumer's durable, acknowledged position; `undefined` until the first acknowledgement. Only an
   * acknowledgement of the current slot moves it: after a re-creation, acknowledgements of the lost slot are ignored.
   */
  readonly acknowledged: Effect.Effect<Acknowledged | undefined>
  /** Bytes of WAL kept behind the acknowledged position (default 0). */
  readonly windowBytes?: bigint
  readonly advanceInterval?: Duration.Input
  /**
   * How long one advance step may take once it did not fit in the guard's deadline (default 1 minute): a long
   * transaction keeps the slot's restart_lsn back, and every step then decodes from there.
   */
  readonly advanceTimeout?: Duration.Input
  /** How long the last advance, when the manager stops, may take (default 1 second): see the module comment. */
  readonly finalAdvanceTimeout?: Duration.Input
  readonly healthInterval?: Duration.Input
  readonly thresholds?: Partial<Health.Thresholds>
  /** What to do when the slot is invalidated or gone (default `fail`). */
  readonly onSlotLost?: "fail" | "recreate"
  /**
   * `temporary` (default): the stream reads a copy, and the slot is advanced here with guarded writes. `persistent`:
   * the stream's walsender holds the slot (which refuses SQL advances while held) and its flush feedback moves it.
   */
  readonly slotMode?: "temporary" | "persistent"
  /** Standbys to ask whether their copy of the failover slot is sync-ready (read-only connections; never logged). */
  readonly standbys?: ReadonlyArray<Redacted.Redacted>
  /** The primary, for a connection of its own while the failover slot settles (see `snapshotBySlot`). Never logged. */
  readonly url?: Redacted.Redacted
}

export interface ResyncRequired {
  readonly lostSlot: string
  readonly newSlot: string
  readonly reason: string
}

export interface SlotManagerState {
  readonly slot: SubscriptionRef.SubscriptionRef<PersistentSlot.Slot | undefined>
  readonly status: SubscriptionRef.SubscriptionRef<Health.Assessment | undefined>
  /**
   * For a failover slot: the primary's side of `FailoverCheck` at each health round — a standby slot in
   * `synchronized_standby_slots` that is missing, inactive or invalid stalls decoding silently, so it shows here.
   */
  readonly failover: SubscriptionRef.SubscriptionRef<FailoverCheck.Report | undefined>
  /** Set (and kept) when the slot had to be re-created: consumers must resync. */
  readonly resyncRequired: SubscriptionRef.SubscriptionRef<ResyncRequired | undefined>
  /**
   * Whether every standby given (`standbys`) has a sync-ready copy of the failover slot — a safe failover target.
   * `undefined`: unknown (no standby given, not a failover slot, or not checked yet).
   */
  readonly failoverReady: SubscriptionRef.SubscriptionRef<boolean | undefined>
  /** The failover slot is settling (see the module comment): idle progress is saved and followed eagerly. */
  readonly settling: SubscriptionRef.SubscriptionRef<boolean>
}

export const makeState: Effect.Effect<SlotManagerState> = Effect.all({
  slot: SubscriptionRef.make<PersistentSlot.Slot | undefined>(undefined),
  status: SubscriptionRef.make<Health.Assessment | undefined>(undefined),
  failover: SubscriptionRef.make<FailoverCheck.Report | undefined>(undefined),
  resyncRequired: SubscriptionRef.make<ResyncRequired | undefined>(undefined),
  failoverReady: SubscriptionRef.make<boolean | undefined>(undefined),
  settling: SubscriptionRef.make(false)
})

/** How long a failover slot settles when no standby is given to ask. */
const settleWithoutStandbys = Duration.minutes(1)

type SlotFailure = PersistentSlot.SlotError | OwnershipLost | LockBackendError

/** Failures that may pass: retried, never fatal (a lost slot is not among them). */
const isTransient = (e: SlotFailure): boolean =>
  e._tag === "LockBackendError" || e._tag === "OwnershipLost" ||
  (e._tag === "SlotError" && (e.reason === "Query" || e.reason === "Setup" || e.reason === "Timeout"))

/** The first advance step, and the smallest: a step the server cancels at the guard's deadline is halved. */
const firstStepBytes = 256n << 20n
const smallestStepBytes = 1n << 20n

// 200 ms, 400 ms, ... at most 5 s apart.
const transientRetry = Retry.transient

/**
 * Writes a running-transactions record the way any role with REPLICATION may: creating a logical slot logs one before
 * it waits for a consistent point. The slot is temporary, on a connection of its own (so it is gone with it, whatever
 * happens), and the wait is cut short: the record is written already.
 */
const snapshotBySlot = (url: Redacted.Redacted, streamId: string) =>
  Effect.scoped(Effect.gen(function*() {
    const target = yield* Connector.sqlPg(url, 2000)
    const conn = yield* PgConnection.make({ connectTimeout: "2 seconds", ...target, applicationName: `slotkeeper:${streamId}:snapshot`, startupParameters: SessionSettings.startupParameters })
    yield* conn.query("SET statement_timeout = 1000")
    yield* conn.query(`SELECT slot_name FROM pg_create_logical_replication_slot('slotkeeper_s_${randomBytes(6).toString("hex")}', 'pgoutput', true)`)
  }))

/** Keeps the slot while the caller owns the stream; never returns (fails on a fatal slot error). */
export const run = (options: SlotManagerOptions, state: SlotManagerState): Effect.Effect<never, SlotFailure, Ownership> =>
  Effect.gen(function*() {
    const own = yield* Ownership
    const { sql } = options
    const thresholds: Health.Thresholds = {
      ...Health.defaultThresholds,
      wantFailover: options.failover ?? Health.defaultThresholds.wantFailover,
      ...options.thresholds
    }

    // Retires a lost incarnation, drops what is left of it, and creates the next one (policy recreate).
    const recreate = (lostName: string, reason: string) =>
      Effect.gen(function*() {
        yield* PersistentSlot.retire(own, sql, options.schema, lostName)
        yield* own.guarded(sql.unsafe("SELECT pg_drop_replication_slot(slot_name)::text FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", [lostName]))
          .pipe(Effect.catchTag("SqlError", () => Effect.void)) // an invalidated slot that cannot be dropped only costs a cleanup later
        const next = yield* PersistentSlot.ensure(own, sql, options)
        yield* SubscriptionRef.set(state.resyncRequired, { lostSlot: lostName, newSlot: next.slotName, reason })
        yield* Effect.logError(`slot ${lostName} of stream ${options.streamId} was lost (${reason}); created ${next.slotName}: consumers must resync`)
        return next
      })

    const initial = yield* PersistentSlot.ensure(own, sql, options).pipe(
      Effect.catchTag("SlotError", (e) =>
        e.reason === "SlotMissing" && options.onSlotLost === "recreate" && e.slotName !== undefined ? recreate(e.slotName, e.message) : Effect.fail(e)),
      Effect.tapError((e) => (isTransient(e) ? Effect.logWarning(`stream ${options.streamId}: setting up the slot: ${e.message}; retrying`) : Effect.void)),
      Effect.retry({ while: isTransient, schedule: transientRetry })
    )
    yield* SubscriptionRef.set(state.slot, initial)
    if (initial.created && initial.consistentPoint !== undefined) {
      yield* Effect.logInfo(
        `stream ${options.streamId}: slot ${initial.slotName} created; capture starts at ${formatLsn(initial.consistentPoint)}: every ` +
          `transaction that commits after it is delivered (one already running then cannot be decoded by PostgreSQL)`
      )
    }
    if (initial.failoverUnavailable !== undefined) yield* Effect.logWarning(initial.failoverUnavailable)

    const checkHealth = Effect.gen(function*() {
      const slot = (yield* SubscriptionRef.get(state.slot))!
      const seen = yield* SlotInspector.inspect(sql, slot.slotName)
      const assessment = Health.assess(slot.slotName, seen.row, seen.currentLsn, thresholds)
      const previous = yield* SubscriptionRef.get(state.status)
      yield* SubscriptionRef.set(state.status, assessment)
      for (const f of assessment.findings) {
        if (f.level === "warn" && !previous?.findings.some((p) => p.code === f.code)) yield* Effect.logWarning(f.message)
      }
      if (slot.failover) {
        const report = yield* FailoverCheck.primary(sql, slot.slotName)
        const before = yield* SubscriptionRef.get(state.failover)
        yield* SubscriptionRef.set(state.failover, report)
        for (const f of report.findings) {
          if (f.level !== "info" && !before?.findings.some((p) => p.code === f.code)) yield* Effect.logWarning(f.message)
        }
      }
      const fatal = assessment.findings.find((f) => f.level === "error")
      if (fatal === undefined) return
      if (options.onSlotLost === "recreate") {
        yield* SubscriptionRef.set(state.slot, yield* recreate(slot.slotName, fatal.message))
        return
      }
      return yield* new PersistentSlot.SlotError({
        reason: fatal.code === "SlotMissing" ? "SlotMissing" : "SlotInvalidated",
        slotName: slot.slotName,
        message: `${fatal.message}. Changes the slot held are lost to this stream; consumers need a resync with a new ` +
          `incarnation (restart with onSlotLost = "recreate" to do it, or investigate first)`
      })
    })

    // Whether every standby in synchronized_standby_slots has flushed `lsn` (true when none is named: then nothing
    // synchronizes the slot safely anyway, and FailoverCheck says so). Advancing a failover slot past what they have
    // would wait for them — holding the guard, and the stream's write lock, for as long.
    const standbysHave = (lsn: Lsn) =>
      Effect.map(StandbyGate.read(sql), (flushed) => StandbyGate.covers(flushed, lsn)).pipe(
        Effect.mapError((e) => new PersistentSlot.SlotError({ reason: "Query", message: `reading the standbys' positions: ${SqlErrors.describe(e)}` }))
      )

    // The acknowledgement last acted on: while it does not move, a round reads nothing from the server.
    let actedOn: Acknowledged | undefined
    let stepBytes = firstStepBytes
    const advanceTimeout = Duration.fromInputUnsafe(options.advanceTimeout ?? "1 minute")
    const serverVersion = (yield* SlotInspector.inspect(sql, initial.slotName).pipe(Effect.retry({ while: isTransient, schedule: transientRetry }))).serverVersion
    const finalAdvanceMs = Duration.toMillis(Duration.fromInputUnsafe(options.finalAdvanceTimeout ?? "1 second"))
    /** One advance to the acknowledged position; `final` (the manager stops): every step bounded by `finalAdvanceMs`. */
    const advanceOnce = (final: boolean) => Effect.gen(function*() {
      if (options.slotMode === "persistent") return
      const acknowledged = yield* options.acknowledged
      const slot = (yield* SubscriptionRef.get(state.slot))!
      if (acknowledged === undefined || acknowledged.slotName !== slot.slotName) return
      if (actedOn !== undefined && actedOn.slotName === acknowledged.slotName && actedOn.lsn >= acknowledged.lsn) return
      const seen = yield* SlotInspector.inspect(sql, slot.slotName)
      const current = seen.row?.confirmedFlush
      if (current === undefined) return // missing: the health check decides what that means
      const target = AdvanceTarget.target({ acknowledged: acknowledged.lsn, current, windowBytes: options.windowBytes ?? 0n })
      if (target === undefined) {
        actedOn = acknowledged
        return
      }
      // (a store outside the source database has no save position: the target itself must be on the standbys)
      if (slot.failover && !(yield* standbysHave(acknowledged.savedAt ?? target))) return // next round
      // In steps, each a guarded transaction under the holder's deadline: an advance decodes all the WAL it passes
      // over (from the slot's restart_lsn), and a large backlog in one statement would be cancelled at the deadline,
      // every round, for ever. A step the server cancels is done again at once with the longer `advanceTimeout`
      // (a long transaction keeps restart_lsn back, and then no step is short), and the steps after it are halved.
      // Every step ends at or below the target, which was acknowledged: skipping anything below it is right.
      let at = current
      while (at < target) {
        const to = target - at > stepBytes ? at + stepBytes : target
        const step = yield* Effect.exit(PersistentSlot.advance(own, sql, slot.slotName, to, final ? { timeoutMs: finalAdvanceMs, serverVersion } : undefined))
        if (step._tag === "Failure") {
          const error = Cause.squash(step.cause)
          if (!(error instanceof PersistentSlot.SlotError && error.reason === "Timeout")) return yield* Effect.failCause(step.cause)
          // stopping: what is left is the next owner's (no longer step here)
          if (final) return yield* Effect.logDebug(`stream ${options.streamId}: the last advance of ${slot.slotName} did not finish within ` +
            `${finalAdvanceMs} ms; left at ${formatLsn(at)} for the next owner`)
          if (stepBytes > smallestStepBytes) stepBytes /= 2n
          yield* Effect.logDebug(`stream ${options.streamId}: advancing ${slot.slotName} by one step took longer than the guard's deadline; ` +
            `done again with ${Duration.format(advanceTimeout)}, and steps of ${stepBytes} bytes from now on`)
          yield* PersistentSlot.advance(own, sql, slot.slotName, to, { timeoutMs: Duration.toMillis(advanceTimeout), serverVersion })
        }
        at = to
      }
      actedOn = acknowledged
    })

    // One last advance when the manager stops (shutdown or handover), while the guard may still prove ownership.
    // Bounded twice: each step's statement_timeout on the server, and the whole here (a query the server has not
    // answered is cancelled), so that a stop never waits on it longer than `finalAdvanceTimeout` and a margin.
    yield* Effect.addFinalizer(() => Effect.ignore(Effect.timeoutOption(advanceOnce(true), Duration.millis(finalAdvanceMs + 500))))

    // Settling a failover slot (see the module comment): until the standbys given say their copy is sync-ready, or
    // for a minute when none is given.
    const settle = Effect.gen(function*() {
      const slot = (yield* SubscriptionRef.get(state.slot))!
      if (!slot.failover) return
      yield* SubscriptionRef.set(state.settling, true)
      // a standby that cannot be reached is tried again every 5 s (not ready meanwhile)
      const connect = (url: Redacted.Redacted) =>
        Effect.gen(function*() {
          for (let said = false; ;) {
            const built = yield* Effect.exit(Layer.build(Layer.unwrap(Effect.map(Connector.sqlPg(url, 10_000), (target) =>
              PgClient.layer({ ...target, maxConnections: 1, applicationName: `slotkeeper:${options.streamId}:readiness`, startupParameters: SessionSettings.startupParameters })))))
            if (built._tag === "Success") return Context.get(built.value, SqlClient.SqlClient)
            if (!said) yield* Effect.logWarning(`stream ${options.streamId}: a standby given for the failover check cannot be reached: ${Cause.pretty(built.cause).split("\n")[0]}; trying again`)
            said = true
            yield* Effect.sleep("5 seconds")
          }
        })
      const standbys = yield* Effect.forEach(options.standbys ?? [], connect)
      const deadline = Date.now() + Duration.toMillis(settleWithoutStandbys)
      let logSnapshots = serverVersion >= 160000
      for (let round = 0; ; round++) {
        const current = (yield* SubscriptionRef.get(state.slot))!
        if (standbys.length > 0) {
          const reports = yield* Effect.forEach(standbys, (standby) => Effect.option(FailoverCheck.standby(standby, current.slotName)))
          const ready = reports.every((r) => r._tag === "Some" && r.value.ok && r.value.findings.every((f) => f.code !== "SlotNotSyncReady"))
          const before = yield* SubscriptionRef.get(state.failoverReady)
          yield* SubscriptionRef.set(state.failoverReady, ready)
          if (ready && before !== true) yield* Effect.logInfo(`stream ${options.streamId}: slot ${current.slotName} is sync-ready on every standby given: a safe failover target`)
          if (!ready && before === true) yield* Effect.logWarning(`stream ${options.streamId}: slot ${current.slotName} is no longer sync-ready on every standby given`)
          yield* SubscriptionRef.set(state.settling, !ready)
        } else if (Date.now() >= deadline) {
          yield* SubscriptionRef.set(state.settling, false)
          return
        }
        // A running-transactions record lets the slot's restart_lsn move at once; the background writer logs one only
        // every 15 s. pg_log_standby_snapshot() logs one where the role may (a superuser, or granted EXECUTE);
        // otherwise creating a logical slot does: a temporary one, on a connection of its own that closes with it.
        if ((yield* SubscriptionRef.get(state.settling)) && round % 2 === 0 && (yield* Effect.exit(own.assertFresh))._tag === "Success") {
          if (logSnapshots) {
            const logged = yield* Effect.exit(sql.unsafe("SELECT pg_log_standby_snapshot()::text"))
            if (logged._tag === "Failure") logSnapshots = false
          }
          if (!logSnapshots && options.url !== undefined) yield* Effect.ignore(snapshotBySlot(options.url, options.streamId))
        }
        yield* Effect.sleep(standbys.length > 0 && !(yield* SubscriptionRef.get(state.settling)) ? (options.healthInterval ?? "10 seconds") : "1 second")
      }
    }).pipe(Effect.ensuring(SubscriptionRef.set(state.settling, false)))

    // A round that fails on something that may pass (a query, the guard's own statements, a server restarting) is
    // tried again next round (see `Rounds.every`); only a lost slot is fatal.
    yield* checkHealth.pipe(Effect.retry({ while: isTransient, schedule: transientRetry }))
    return yield* Effect.all([
      Rounds.every(options.healthInterval ?? "10 seconds", checkHealth, `stream ${options.streamId}: checking the slot`, isTransient),
      Rounds.every(options.advanceInterval ?? "1 second", advanceOnce(false), `stream ${options.streamId}: advancing the slot`, isTransient),
      settle
    ], { concurrency: "unbounded" }).pipe(Effect.andThen(Effect.never))
  }).pipe(Effect.scoped)
