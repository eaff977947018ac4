/**
 * Delivery: the owned work of one stream — its persistent slot (`SlotManager`), its durable position
 * (`CheckpointStore`) and its replication connection (`ReplicationStream`), run together and handed to a consumer.
 *
 * Run it as the owned effect of `Supervisor.run`. Everything here is a child of the owned scope: losing ownership
 * interrupts the slot manager, the connection and the consumer together, and a fatal error of any of them (an
 * invalidated slot, a refused resume, a failed save) fails the owned work and stops the others.
 *
 * **Details**
 *
 * - The slot is advanced to the *saved* checkpoint only (never to an acknowledgement not yet saved), so the slot is
 *   never ahead of the durable position; at shutdown the connection saves last, then the slot manager advances.
 * - A replication connection that fails or ends is reconnected after a capped backoff, and every reconnect runs the
 *   resume checks again; `consume` is called once per connection (events of one connection, acknowledged on it).
 *   One the server refuses for good (`ReplicationError` `Refused`: the role's privilege, pg_hba.conf, a pooler, TLS)
 *   fails the owned work instead: no waiting fixes it.
 * - When the slot had to be re-created (policy `recreate`), the connection is not opened on the new incarnation
 *   silently: `resyncRequired` is set, and the consumer decides (the durable position of the lost slot means nothing
 *   in the new one; the resume check refuses it with `SlotIncarnationChanged`).
 */
import { Clock, Duration, Effect, Fiber, Layer, type Redacted, type Scope, Stream, SubscriptionRef } from "effect"
import type * as Lsn from "../Lsn.ts"
import type { SqlClient } from "effect/sql/SqlClient"
import * as Backfill from "../backfill/Backfill.ts"
import { Ownership, type OwnershipLost } from "../ownership/Ownership.ts"
import * as StreamOwnership from "../ownership/StreamOwnership.ts"
import * as PgPublication from "../publication/PgPublication.ts"
import * as PublicationManager from "../publication/PublicationManager.ts"
import { qualified as qualifiedTable } from "../internal/schemaSetup.ts"
import * as SchemaTables from "../publication/SchemaTables.ts"
import * as Subscription from "../publication/Subscription.ts"
import { SlotError } from "../slot/PersistentSlot.ts"
import * as SlotManager from "../slot/SlotManager.ts"
import * as Checkpoint from "./Checkpoint.ts"
import * as ReplicationStream from "./ReplicationStream.ts"
import * as Retry from "../internal/retry.ts"

export interface DeliveryOptions
  extends
    Omit<SlotManager.SlotManagerOptions, "acknowledged" | "sql" | "slotMode">,
    Omit<ReplicationStream.ReplicationStreamOptions, "slotName" | "checkpoint" | "sql" | "url" | "streamId" | "instanceId" | "schema" | "onSlotLost" | "settling">
{
  readonly url: Redacted.Redacted
  readonly instanceId: string
  readonly sql: SqlClient
  /**
   * Runs the stream's backfills (`Backfill`: requested with `BackfillProgress.request`) on each connection, their rows
   * placed in its events as `read` changes. Off by default.
   */
  readonly backfill?: Pick<Backfill.BackfillOptions, "chunkSize" | "pollInterval" | "readTimeout" | "initial"> | undefined
  /** Set while a replication connection streams (see `Capture`), cleared when it ends. */
  readonly capture?: SubscriptionRef.SubscriptionRef<Capture | undefined>
  /**
   * Where the durable position lives (default: slotkeeper's `checkpoints` table in the source database): a store, or
   * how to open one for a holding period (run in the owned scope, e.g. to take a lock on a file for as long as it).
   */
  readonly checkpoint?:
    | Checkpoint.CheckpointStore["Service"]
    | Effect.Effect<Checkpoint.CheckpointStore["Service"], Checkpoint.CheckpointError | OwnershipLost, Ownership | Scope.Scope>
}

/**
 * Capture: the stream is being read — a replication connection of this holding period has started streaming. Only
 * then does an instance report itself active (`/health/owner`): a change committed after that is delivered.
 */
export interface Capture {
  readonly epoch: number
  /** The stream's persistent slot. */
  readonly slotName: string
  /**
   * Where that slot was created: every transaction that commits after it is delivered (the stream's capture start;
   * `undefined` for a slot created before slotkeeper recorded it).
   */
  readonly origin: Lsn.Lsn | undefined
  /** Where the current connection streams from (the durable position). */
  readonly from: Lsn.Lsn
  /** When it started streaming (wall-clock millis). */
  readonly since: number
}

/** What a new connection may overcome: the connection failed or ended, or a read of the resume checks failed. */
const isConnectionError = (e: unknown): e is { readonly message: string } =>
  (e instanceof ReplicationStream.ReplicationError && (e.reason === "Ended" || e.reason === "Connect")) ||
  (e instanceof SlotError && e.reason === "Query") ||
  e instanceof Checkpoint.CheckpointError

// 200 ms, 400 ms, ... at most 5 s apart.
const reconnectSchedule = Retry.transient

/**
 * Runs the stream's slot, checkpoint and connection while the caller owns the stream, and `consume`s the
 * connection's events. Ends when `consume` ends; fails when any part fails.
 */
export const run = <A, E, R>(
  options: DeliveryOptions,
  consume: (stream: ReplicationStream.ReplicationStream) => Effect.Effect<A, E, R>,
  state?: SlotManager.SlotManagerState
) =>
  Effect.gen(function*() {
    const own = yield* Ownership
    const slots = state ?? (yield* SlotManager.makeState)
    const store = options.checkpoint === undefined
      ? yield* Checkpoint.sourceTable(own, options.sql, options.schema)
      : Effect.isEffect(options.checkpoint) ? yield* options.checkpoint : options.checkpoint
    let connection: ReplicationStream.ReplicationStream | undefined
    let failures = 0 // connection failures since the last connection that opened
    const acknowledged = Effect.suspend(() =>
      connection === undefined ? Effect.succeed(undefined) : Effect.map(connection.durable, (d) => ({ lsn: d.lsn, slotName: d.slotName, savedAt: d.walPosition }))
    )
    const slotManager = SlotManager.run({ ...options, sql: options.sql, acknowledged, slotMode: options.mode ?? "temporary" }, slots)
    const connect = Effect.gen(function*() {
      const slot = yield* SubscriptionRef.changes(slots.slot).pipe(Stream.filter((s) => s !== undefined), Stream.runHead)
      if (slot._tag === "None") return yield* Effect.never
      const opened = yield* ReplicationStream.open({ ...options, slotName: slot.value.slotName, checkpoint: store, settling: SubscriptionRef.get(slots.settling) })
      connection = options.backfill === undefined ? opened : yield* Backfill.attach(opened, {
        ...options.backfill,
        streamId: options.streamId,
        instanceId: options.instanceId,
        schema: options.schema,
        publication: options.publication,
        url: options.url,
        sql: options.sql
      })
      failures = 0
      if (options.capture !== undefined) {
        const capture = options.capture
        yield* SubscriptionRef.set(capture, {
          epoch: own.epoch,
          slotName: slot.value.slotName,
          origin: slot.value.consistentPoint,
          from: connection.startedAt,
          since: yield* Clock.currentTimeMillis
        })
        yield* Effect.addFinalizer(() => SubscriptionRef.set(capture, undefined))
      }
      // A slot replaced while this connection streams (policy recreate) ends it: the next connection streams the new
      // incarnation (announcing the resync), and the new slot follows the positions saved from then on.
      const replaced = SubscriptionRef.changes(slots.slot).pipe(
        Stream.filter((s) => s !== undefined && s.slotName !== slot.value.slotName),
        Stream.runHead,
        Effect.flatMap((next) =>
          Effect.fail(new ReplicationStream.ReplicationError({
            reason: "Ended",
            message: `slot ${slot.value.slotName} was replaced by ${next._tag === "Some" ? next.value?.slotName : "another"}`
          })))
      )
      return yield* Effect.raceFirst(consume(connection), replaced)
    }).pipe(Effect.scoped)
    // A replication connection that fails or ends is opened again (with the resume checks) after a capped backoff;
    // everything else — a refused resume, a failed save, the consumer's own errors — fails the owned work.
    // Said as a warning at the first failure of a streak and every 12th after it (about a minute apart at the cap);
    // the others at debug level, so that a long outage does not flood the log.
    const streaming = connect.pipe(
      Effect.tapError((e) => {
        if (!isConnectionError(e)) return Effect.void
        failures++
        const message = `stream ${options.streamId}: ${e.message}; reconnecting${failures > 1 ? ` (failure ${failures} in a row)` : ""}`
        return failures === 1 || failures % 12 === 0 ? Effect.logWarning(message) : Effect.logDebug(message)
      }),
      Effect.retry({ while: isConnectionError, schedule: reconnectSchedule })
    )
    // The slot manager never returns; `streaming` ending ends the owned work. On the way out the connection stops
    // first — its finalizer makes the last save — and only then the slot manager, whose finalizer advances the slot to
    // that save: forked in this scope before `streaming` runs, it is interrupted when the scope closes, after it.
    const manager = yield* Effect.forkScoped(slotManager)
    return yield* Effect.raceFirst(streaming, Fiber.join(manager))
  }).pipe(Effect.scoped)

export interface DeliveryLayerOptions extends DeliveryOptions {
  /**
   * The stream's whole set of subscriptions, made so when ownership is taken (`PublicationManager.sync`): ones saved
   * earlier that are not in it are removed, changed ones replaced. The publication manager keeps the publication for them.
   */
  readonly subscriptions?: ReadonlyArray<Subscription.Subscription>
  /**
   * Whole schemas (exact names): every table in them is subscribed, including tables created later, except those that
   * cannot be published without breaking the application's writes (`SchemaTables`). Looked at every
   * `schemaWatchInterval` (default 10 s).
   */
  readonly schemas?: ReadonlyArray<string> | undefined
  readonly schemaWatchInterval?: Duration.Input | undefined
  /** Where the tables of `schemas` that are left out go (for a status page or metrics), with why. */
  readonly unpublished?: SubscriptionRef.SubscriptionRef<ReadonlyArray<SchemaTables.Skipped>> | undefined
  /** What the publication publishes (PostgreSQL's `publish` option; default insert, update, delete and truncate). */
  readonly publishes?: PgPublication.Publishes | undefined
  /** `publish_via_partition_root` (PostgreSQL 13+): a partitioned table's changes named by it, not its partitions. */
  readonly viaRoot?: boolean | undefined
  /** `publish_generated_columns` (PostgreSQL 18+): default `stored` on 18+, `none` before. */
  readonly generatedColumns?: "stored" | "none" | undefined
  readonly publicationManager?: PublicationManager.PublicationManagerOptions
  /** Where the slot's state and health go (for a status page or metrics); a fresh one by default. */
  readonly slotState?: SlotManager.SlotManagerState
  /** Where the publication manager's status goes (for a status page or metrics); its own by default. */
  readonly publicationStatus?: SubscriptionRef.SubscriptionRef<PublicationManager.PublicationStatus>
}

/**
 * The whole stream as one layer, for an Effect app: competes for ownership (the `StreamOwnership` service); while holding
 * it, keeps the publication for `subscriptions` and delivers the changes to `consume`; competes again after a loss.
 *
 * **Details**: the layer's construction *is* the stream's lifetime — merge it with the app's other layers and run
 * them with `Layer.launch`. A fatal error (an invalidated slot under policy `fail`, a refused resume, the consumer's
 * own failure) fails the launch, so the process ends non-zero and says why; when `consume` returns, so does the layer.
 */
export const layer = <E, R>(
  options: DeliveryLayerOptions,
  consume: (stream: ReplicationStream.ReplicationStream) => Effect.Effect<unknown, E, R>
) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const stream = yield* StreamOwnership.StreamOwnership
    const owned = Effect.gen(function*() {
      const own = yield* Ownership
      const schemas = options.schemas ?? []
      if (options.subscriptions !== undefined || schemas.length > 0) {
        const explicit = options.subscriptions ?? []
        // the schemas' tables (see SchemaTables); a table given on its own keeps its own subscription
        const given = new Set(explicit.map((s) => SchemaTables.idOf(s.table.schema ?? "public", s.table.name)))
        const publishes = options.publishes ?? { insert: true, update: true, delete: true, truncate: true }
        const expandNow = Effect.gen(function*() {
          const found = yield* SchemaTables.list(options.sql, schemas)
          const missing = schemas.filter((n) => !found.existing.includes(n))
          if (missing.length > 0) {
            return yield* new Subscription.SubscriptionInvalid({
              id: `${missing[0]}.*`,
              reason: "TableMissing",
              message: `schema ${missing[0]} does not exist (names are exact: as PostgreSQL lists it in \\dn)`
            })
          }
          return SchemaTables.expand(found.tables, { publishes, explicit: given })
        })
        const unpublished = options.unpublished ?? (yield* SubscriptionRef.make<ReadonlyArray<SchemaTables.Skipped>>([]))
        const said = new Set<string>()
        // recorded with the publication too, for `slotkeeper status` (another process): written when it changes
        let recorded: string | undefined
        const record = (skipped: ReadonlyArray<SchemaTables.Skipped>) =>
          Effect.suspend(() => {
            const text = JSON.stringify(skipped.map((t) => ({ table: `${t.schema}.${t.name}`, reason: t.reason, message: t.message })))
            if (text === recorded) return Effect.void
            return own.guarded(options.sql.unsafe(
              `UPDATE ${qualifiedTable(options.schema, "publications")} SET unpublished = $2::jsonb WHERE stream_id = $1`,
              [options.streamId, text]
            )).pipe(
              Effect.tap(() => Effect.sync(() => void (recorded = text))),
              Effect.catchCause((cause) => Effect.logWarning(`stream ${options.streamId}: recording the tables left out failed (status may not show them)`, cause))
            )
          })
        const report = (skipped: ReadonlyArray<SchemaTables.Skipped>) =>
          Effect.gen(function*() {
            yield* SubscriptionRef.set(unpublished, skipped)
            yield* record(skipped)
            for (const t of skipped) {
              const key = `${t.schema}.${t.name}:${t.reason}`
              if (!said.has(key)) yield* Effect.logWarning(`stream ${options.streamId}: not publishing ${t.message}`)
              said.add(key)
            }
          })
        const first = schemas.length === 0 ? { subscriptions: [], skipped: [] } : yield* expandNow
        // the configured set is made the whole set as the manager starts (the saved set is never applied first)
        const manager = yield* PublicationManager.make(
          yield* PgPublication.make(own, options.sql, {
            publication: options.publication,
            schema: options.schema,
            ...(options.publishes === undefined ? {} : { publishes: options.publishes }),
            ...(options.viaRoot === undefined ? {} : { viaRoot: options.viaRoot }),
            ...(options.generatedColumns === undefined ? {} : { generatedColumns: options.generatedColumns })
          }),
          {
            ...options.publicationManager,
            configured: { subscriptions: [...explicit, ...first.subscriptions], instanceId: own.instanceId, startedAt: stream.startedAt },
            ...(options.publicationStatus === undefined ? {} : { status: options.publicationStatus })
          }
        )
        // said once the publication (and slotkeeper's record of it) exists
        if (schemas.length > 0) yield* report(first.skipped)
        if (schemas.length > 0) {
          // tables created (or given a key) later: added at the next look, from that commit on
          let current = first.subscriptions.map((s) => s.id).join("\n")
          yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
            yield* Effect.sleep(options.schemaWatchInterval ?? Duration.seconds(10))
            const next = yield* expandNow
            yield* report(next.skipped)
            const ids = next.subscriptions.map((s) => s.id).join("\n")
            if (ids === current) return
            // an instance that keeps a newer instance's set (a rolling deploy) does not impose its own
            if ((yield* SubscriptionRef.get(manager.status)).disagreement !== undefined) return
            yield* manager.sync([...explicit, ...next.subscriptions])
            yield* Effect.logInfo(`stream ${options.streamId}: the tables of schema${schemas.length > 1 ? "s" : ""} ${schemas.join(", ")} are now ${next.subscriptions.map((s) => s.id).join(", ") || "none"}`)
            current = ids
          }).pipe(
            // a failed look (a lock, the connection) is tried again at the next; ownership lost ends the owned scope anyway
            Effect.catchCause((cause) => Effect.logWarning(`stream ${options.streamId}: looking for new tables in ${schemas.join(", ")} failed; trying again`, cause))
          )))
        }
      }
      return yield* run(options, consume, options.slotState)
    })
    yield* stream.supervisor.run(owned)
  }))
