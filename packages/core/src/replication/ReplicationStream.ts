/**
 * ReplicationStream: one replication connection of an owned stream — resume checks, streaming from the stream's
 * slot (a temporary copy of it, or the slot itself), changes out with backpressure, acknowledgements in, and the
 * durable position saved and reported back.
 *
 * Open it inside the owned scope (with `Ownership` the checkpoint saves are guarded); closing the scope ends the
 * connection, after a last save of what was acknowledged (bounded by `finalSaveTimeout`).
 *
 * **What it guarantees**
 * - Resume checks first (`Resume.decide`): the slot exists, is valid, is the incarnation the durable position belongs
 *   to, is not ahead of it, and the server is the same system on an acceptable timeline. Otherwise `ResumeRefused`,
 *   before anything is streamed.
 * - Only from the server ownership is held on: the server the replication connection reaches (system identifier,
 *   timeline, postmaster start; see `ServerInstance`) must be the one the lock session or the last lease renewal ran
 *   on, checked again on the streaming connection itself right before `START_REPLICATION`. Another server (a standby
 *   promoted behind the same address while the lock session still hangs on the old primary) is `OwnershipLost`:
 *   the owner scope closes, and the instance competes again on the server it can reach.
 * - Streaming starts at the durable position, explicitly (never a position remembered from an earlier connection).
 *   Transactions committed below it are skipped (the server skips them too; checked here again).
 * - At-least-once: the position saved and reported to the server as flushed is one the consumer acknowledged (see
 *   `Watermark`), saved in the `CheckpointStore` first. A keepalive's position is taken only when nothing received is
 *   unacknowledged. Status updates go out on a timer, and at once when the server asks, with the saved position.
 * - Backpressure: events go through a bounded queue; while it is full the socket is not read.
 * - Idle databases: when nothing was received for `heartbeatInterval`, a small non-transactional logical message
 *   (`pg_logical_emit_message`, prefix `slotkeeper:heartbeat:<stream>`) is written. It comes back through the stream,
 *   is not delivered, and — nothing being in flight — moves the position, so the slot releases WAL while the
 *   published tables are idle.
 *
 * **Slot modes**
 * - `temporary` (default): the persistent slot is copied into a temporary slot on the replication session
 *   (`TemporaryClone`), and streamed from; the server drops the copy when the session ends. The persistent slot is
 *   never held by a walsender; `SlotManager` advances it with guarded writes.
 * - `persistent`: the persistent slot is streamed directly. While another walsender holds it ("active for PID"), say
 *   so and retry; never terminate it. Here the walsender's flush feedback moves the slot (it refuses SQL advances
 *   while held), and the feedback carries only the saved, guarded checkpoint position, minus the window.
 *
 * **How it fails**: `ReplicationError` when the connection cannot start or ends (the owner decides whether to
 * reconnect — every reconnect runs the resume checks again), `CheckpointError`/`OwnershipLost` when a save fails.
 */
import { Cause, Duration, Effect, Queue, Redacted, Schedule, Schema, type Scope, Stream } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { Client } from "pg"
import { LogicalReplicationService, type Pgoutput, PgoutputPlugin } from "pg-logical-replication"
import { Assembler, heartbeatPrefix, type ReplicationEvent } from "./Assembler.ts"
import { DecodeError, Decoder, type Message } from "./Pgoutput.ts"
import * as ReadPacing from "./ReadPacing.ts"
import { Rows } from "./Rows.ts"
import * as TypeCatalog from "./TypeCatalog.ts"
import { Spool, SpoolError } from "./Spool.ts"
import * as Rounds from "../internal/rounds.ts"
import * as Lsn from "../Lsn.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import { Ownership, OwnershipLost } from "../ownership/Ownership.ts"
import * as ServerInstance from "../ownership/ServerInstance.ts"
import { type SlotError, SlotError as SlotErrorClass } from "../slot/PersistentSlot.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Resume from "../slot/Resume.ts"
import * as ServerIdentity from "../slot/ServerIdentity.ts"
import * as SlotInspector from "../slot/SlotInspector.ts"
import * as StandbyGate from "../slot/StandbyGate.ts"
import * as TemporaryClone from "../slot/TemporaryClone.ts"
import * as ConnectFailure from "../connection/ConnectFailure.ts"
import * as Connector from "../connection/Connector.ts"
import * as StreamId from "../StreamId.ts"
import type { CheckpointError, CheckpointStore, DurablePosition, SaveReceipt } from "./Checkpoint.ts"
import * as Watermark from "./Watermark.ts"

export class ReplicationError extends Schema.TaggedError<ReplicationError>()("ReplicationError", {
  /** `Spool`: the local spool could not be written (a full disk); the message names the file. */
  /** `Refused`: the server refused the replication connection for a reason no retry fixes (`ConnectFailure`). */
  reason: Schema.Literals(["Connect", "SlotActive", "Ended", "Protocol", "Spool", "Refused"]),
  message: Schema.String
}) {}

export type { ChangeEvent, MessageEvent, ReplicationEvent, ResyncEvent, SchemaColumn, SchemaEvent, TruncateEvent } from "./Assembler.ts"

export interface ReplicationStreamOptions {
  /** Never logged. */
  readonly url: Redacted.Redacted
  /**
   * The replication connection's own URL (never logged), when SQL goes through a pooler or proxy that cannot carry
   * the replication protocol; by default `url`. It must reach the server ownership is held on (checked at every
   * connection).
   */
  readonly replicationUrl?: Redacted.Redacted | undefined
  readonly streamId: string
  readonly instanceId: string
  /** The service pool (reads, heartbeat messages). */
  readonly sql: SqlClient
  /** The stream's persistent slot, current incarnation. */
  readonly slotName: string
  readonly publication: string
  readonly mode?: "temporary" | "persistent"
  readonly checkpoint: CheckpointStore["Service"]
  /** How often acknowledgements are saved and reported (default 1 s). */
  readonly saveInterval?: Duration.Input
  /**
   * How long the last save, when the connection closes, may take (default 2 seconds). A save is a guarded write: it
   * waits for the stream's write lock, up to the loss deadline, and a stop that waited that long for it would hold the
   * process (and a successor) back. What it does not save is delivered again by the next owner (at least once).
   */
  readonly finalSaveTimeout?: Duration.Input
  /** Status updates at least this often, well within `wal_sender_timeout` (default 10 s). */
  readonly statusInterval?: Duration.Input
  /** Heartbeat message after this long without receiving anything (default 30 s). */
  readonly heartbeatInterval?: Duration.Input
  /** `persistent` mode: bytes of WAL kept behind the saved position (the feedback holds back by this much). */
  readonly windowBytes?: bigint
  /** Events buffered between the socket and the consumer (default 1024). */
  readonly bufferSize?: number
  /** `persistent` mode: how to wait while another walsender holds the slot (default every 1 s, for ever). */
  readonly slotActiveRetry?: Schedule.Schedule<unknown, ReplicationError>
  /** While this says so, the failover slot is settling (`SlotManager`): idle progress is made and saved every second. */
  readonly settling?: Effect.Effect<boolean>
  /**
   * Policy for a lost slot (see `SlotManager`). With `recreate`, a durable position of a retired incarnation of this
   * stream (in slotkeeper's `slots` catalog, in `schema`) starts the current slot from its creation, with a `Resync`
   * event first, instead of being refused.
   */
  readonly onSlotLost?: "fail" | "recreate"
  readonly schema?: string
}

export interface ReplicationStream {
  /** The events, in commit order; fails when the connection fails or a save fails. Consume it once. */
  readonly events: Stream.Stream<ReplicationEvent, ReplicationError | CheckpointError | OwnershipLost | LockBackendError>
  /**
   * Everything up to `position` is durable downstream: a commit's `endLsn` or a message's `ackPosition` — or, inside
   * a transaction, `{ commitLsn, seq }` of a change: after a restart that transaction resumes after that change.
   */
  readonly acknowledge: (position: Lsn.Lsn | Watermark.InTransaction) => Effect.Effect<void, Watermark.AckAhead>
  /** The saved durable position (what `SlotManager` may advance the slot to), and where the save is in the WAL. */
  readonly durable: Effect.Effect<DurablePosition & SaveReceipt>
  /** Where streaming started. */
  readonly startedAt: Lsn.Lsn
}

export { heartbeatPrefix }

/** A Standby Status Update (`r`): write = flush = apply = `position`, exactly (no `+ 1`). */
export const statusUpdate = (position: Lsn.Lsn, nowMillis: number, replyRequested = false): Buffer => {
  const buffer = Buffer.alloc(34)
  buffer.write("r", 0)
  for (const offset of [1, 9, 17]) buffer.writeBigUInt64BE(position, offset)
  // microseconds since 2000-01-01
  buffer.writeBigInt64BE((BigInt(nowMillis) - 946_684_800_000n) * 1000n, 25)
  buffer.writeUInt8(replyRequested ? 1 : 0, 33)
  return buffer
}

const describe = (e: unknown) => (e instanceof Error ? e.message : String(e))

const resumeState = (slotName: string, seen: SlotInspector.Observation): Resume.SlotState => ({
  slotName,
  exists: seen.row !== undefined,
  confirmedFlush: seen.row?.confirmedFlush,
  invalidationReason: seen.row?.invalidationReason,
  walStatus: seen.row?.walStatus,
  conflicting: seen.row?.conflicting,
  synced: seen.row?.synced
})

type OpenError = ReplicationError | Resume.ResumeRefused | CheckpointError | SlotError | OwnershipLost

/** Whether `slotName` is a retired incarnation of the stream in slotkeeper's catalog. */
const isRetired = (sql: SqlClient, schema: string, streamId: string, slotName: string) =>
  Effect.map(
    sql.unsafe<{ retired: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM "${schema}".slots WHERE stream_id = $1 AND slot_name = $2 AND state = 'retired') AS retired`,
      [streamId, slotName]
    ),
    (rows) => rows[0]?.retired === true
  ).pipe(Effect.mapError((e) => new SlotErrorClass({ reason: "Query", slotName, message: `reading the slot catalog: ${SqlErrors.describe(e)}` })))

/**
 * Where a connection may start, and whether it may start at all: the durable position, the server (the one
 * ownership is held on) and the slot, judged by `Resume` — at every start and reconnect.
 *
 * **Gotchas**: a refusal (`ResumeRefused`) or another server (`OwnershipLost`) fails here, before any connection
 * streams; under policy `recreate`, a position saved on a retired incarnation of the stream's slot is a resync (logged
 * as an error), not a refusal.
 */
const resumePoint = (options: ReplicationStreamOptions, own: Ownership["Service"], applicationName: string) =>
  Effect.gen(function*() {
    const stored = yield* options.checkpoint.load
    const server = yield* ServerIdentity.read(options.replicationUrl ?? options.url, applicationName).pipe(
      Effect.catchTags({
        ConnectFailed: (e) => Effect.fail(new ReplicationError({ reason: e.permanent ? "Refused" : "Connect", message: e.message })),
        ConnectionSpecInvalid: (e) => Effect.fail(new ReplicationError({ reason: "Refused", message: e.message }))
      })
    )
    // the server must be the one ownership is held on
    const ownedOn = yield* own.server
    if (ownedOn !== undefined && !ServerInstance.same(ownedOn, server.instance)) {
      return yield* new OwnershipLost({
        streamId: options.streamId,
        epoch: own.epoch,
        message: `the replication connection reached another server (${ServerInstance.describe(server.instance)}) than the one ` +
          `ownership of stream ${options.streamId} is held on (${ServerInstance.describe(ownedOn)}): not streaming from it ` +
          `(a failover or a restart behind the same address?)`
      })
    }
    const seen = yield* SlotInspector.inspect(options.sql, options.slotName)
    // under policy recreate, a position of a retired incarnation of this stream is a resync, not a refusal
    const replacedIncarnation = options.onSlotLost === "recreate" && stored !== undefined && stored.slotName !== options.slotName &&
      options.schema !== undefined && (yield* isRetired(options.sql, options.schema, options.streamId, stored.slotName))
    const decision = Resume.decide(stored, resumeState(options.slotName, seen), server, { replacedIncarnation })
    if (decision._tag === "Refuse") return yield* Effect.fail(decision.error)
    const resync = decision._tag === "StartFromSlot" ? decision.resync : undefined
    if (resync !== undefined) {
      yield* Effect.logError(
        `stream ${options.streamId}: slot ${resync.lostSlot} was lost and replaced by ${options.slotName} (policy recreate): the changes ` +
          `between them are lost to consumers, who must resync; streaming ${options.slotName} from where it was created`
      )
    }
    const startedAt = decision._tag === "Resume" ? decision.from : (seen.row?.confirmedFlush ?? 0n)
    // a partly consumed transaction (it commits at or after the start): its acknowledged changes are not sent again
    const resumeInside = decision._tag === "Resume" && stored?.inTransaction !== undefined && stored.inTransaction.commitLsn >= startedAt
      ? stored.inTransaction
      : undefined
    return { server, seen, startedAt, resumeInside, resync }
  })

/**
 * The `START_REPLICATION` command of a connection: pgoutput with protocol 2 and in-progress streaming on 14+ (a huge
 * transaction is sent as it is decoded, not collected by the server until its commit), logical messages on.
 * `slot` and `publication` are slotkeeper's own names (`[a-z0-9_]`): a replication session speaks only the simple
 * query protocol.
 */
export const startReplicationCommand = (slot: string, from: Lsn.Lsn, publication: string, serverVersion: number): string => {
  const protocol = serverVersion >= 140000 ? 2 : 1
  const pgoutputOptions = [`proto_version '${protocol}'`, `publication_names '"${publication}"'`, "messages 'true'"]
  if (protocol >= 2) pgoutputOptions.push("streaming 'on'")
  return `START_REPLICATION SLOT "${slot}" LOGICAL ${Lsn.format(from)} (${pgoutputOptions.join(", ")})`
}

/**
 * What a received message does to the watermark (pure): a transaction begins, aborts (a streamed one stopped before
 * its commit is sent again whole), commits; a non-transactional message is a position of its own — or, for
 * slotkeeper's WAL heartbeat, idle progress (`idle`), which the caller applies once the standbys have it.
 */
export const afterMessage = (w: Watermark.Watermark, message: Message): { readonly watermark: Watermark.Watermark; readonly idle?: Lsn.Lsn } => {
  switch (message.tag) {
    case "begin":
    case "streamStart":
      return { watermark: Watermark.begin(w) }
    case "streamStop":
      return { watermark: Watermark.abort(w) }
    case "commit":
    case "streamCommit":
      return { watermark: Watermark.commit(w, message.endLsn) }
    case "message":
      if (message.transactional) return { watermark: w }
      return message.prefix.startsWith(heartbeatPrefix) ? { watermark: w, idle: message.lsn + 1n } : { watermark: Watermark.message(w, message.lsn) }
    default:
      return { watermark: w }
  }
}

/**
 * One replication connection of the owned stream, open for the life of the scope: the checks that make resuming
 * safe, then the decoded events in commit order, with `acknowledge` for what the consumer made durable. `Delivery`
 * opens one per connection; open it yourself only to drive the connections of your own.
 *
 * **Details**
 * - Before streaming: the server must be the one ownership is held on (system identifier, timeline, start time),
 *   the slot the one recorded and not ahead of the saved position (`Resume`), and never re-created silently.
 * - In `temporary` mode the session streams from a copy of the persistent slot (`TemporaryClone.copy`), which the
 *   server drops with the session; in `persistent` mode from the slot itself, retried while a dead walsender still
 *   holds it.
 * - Protocol 2 with in-progress streaming on 14+: a huge transaction is spooled on disk until its commit and
 *   delivered whole, in commit order, with bounded memory.
 * - Status updates report exactly what was acknowledged and saved (`Watermark`), never what was merely received.
 *
 * **Gotchas**
 * - Fails with `ResumeRefused` (a gap: the slot ahead of the saved position, a re-created slot, another timeline)
 *   instead of streaming past it: those changes would be lost silently.
 * - `acknowledge` fails with `AckAhead` for a position that was never delivered.
 * - Needs `Ownership`: every write it makes (checkpoint saves, slot bookkeeping) is guarded.
 */
export const open = (options: ReplicationStreamOptions): Effect.Effect<ReplicationStream, OpenError, Scope.Scope | Ownership> =>
  Effect.gen(function*() {
    const own = yield* Ownership
    const mode = options.mode ?? "temporary"
    const applicationName = StreamId.applicationName(options.streamId, options.instanceId, "repl")

    const { server, seen, startedAt, resumeInside, resync } = yield* resumePoint(options, own, applicationName)
    // saved under this server's identity from now on (a newer timeline after a failover that passed the check)
    const identity = { systemId: server.systemId, timeline: server.timeline, slotName: options.slotName }
    let watermark = Watermark.initial(startedAt, resumeInside)

    const queue = yield* Queue.bounded<ReplicationEvent, ReplicationError | CheckpointError | OwnershipLost | LockBackendError | Cause.Done>(
      options.bufferSize ?? 1024
    )
    if (resync !== undefined) yield* Queue.offer(queue, { _tag: "Resync", lostSlot: resync.lostSlot, slot: options.slotName, from: startedAt })
    const fail = (error: ReplicationError | CheckpointError | OwnershipLost | LockBackendError) => Queue.failCauseUnsafe(queue, Cause.fail(error))

    // The replication session's client, once START_REPLICATION was sent (status updates go through it).
    let client: Client | undefined
    let lastReceivedAt = Date.now()
    const sendStatus = (replyRequested = false) => {
      const connection = (client as unknown as { connection?: { sendCopyFromChunk: (b: Buffer) => void } } | undefined)?.connection
      if (connection === undefined) return
      const held = mode === "persistent" ? watermark.durable - (options.windowBytes ?? 0n) : watermark.durable
      connection.sendCopyFromChunk(statusUpdate(held < 0n ? 0n : held, Date.now(), replyRequested))
    }

    const streamedSlot = mode === "temporary" ? TemporaryClone.cloneName() : options.slotName
    // A temporary copy of a failover slot is not one: its walsender does not wait for the standbys in
    // synchronized_standby_slots, so the wait is made here (see StandbyGate). A persistent failover slot's walsender
    // waits by itself.
    const gate = mode === "temporary" && seen.serverVersion >= 170000 && seen.row?.failover === true
      ? yield* StandbyGate.make(options.sql)
      : undefined
    /** A position the consumer may take as idle progress (a keepalive's, a heartbeat's), once the standbys have it. */
    const idleAt = (position: Lsn.Lsn) => {
      if (gate === undefined) watermark = Watermark.keepalive(watermark, position)
      else void gate.reached(position).then(() => void (watermark = Watermark.keepalive(watermark, position)))
    }
    // a huge transaction streamed in progress (protocol 2, see startReplicationCommand) is spooled here on disk
    const decoder = new Decoder()
    const spool = yield* Effect.acquireRelease(Effect.sync(() => new Spool()), (sp) => Effect.sync(() => sp.close()))
    // types that are not built in are looked up when a Relation message names them, before its rows are mapped
    const types = TypeCatalog.make(options.sql)
    const assembler = new Assembler(startedAt, spool, resumeInside, new Rows(types))
    class Plugin extends PgoutputPlugin {
      override async start(c: Client, _slot: string, _lsn: string): Promise<unknown> {
        client = c
        // this very connection must reach the server checked above (and so the one ownership is held on)
        const reached = await ServerIdentity.identify(c)
        if (!ServerInstance.same(reached, server.instance)) {
          throw new Error(`the server changed between connections: reached ${ServerInstance.describe(reached)}, expected ` +
            `${ServerInstance.describe(server.instance)}`)
        }
        if (mode === "temporary") await TemporaryClone.copy(c, options.slotName, streamedSlot)
        return c.query(startReplicationCommand(streamedSlot, startedAt, options.publication, seen.serverVersion))
      }
      // Runs at the socket, in order, before the message is queued: receipt is recorded before any later keepalive.
      override parse(buffer: Buffer): Pgoutput.Message {
        let message: Message
        try {
          message = decoder.decode(buffer)
        } catch (e) {
          // never thrown into the socket's event handler: the stream fails, with what could not be decoded
          fail(new ReplicationError({ reason: "Protocol", message: `decoding the stream: ${describe(e)}` }))
          return { tag: "origin", originLsn: 0n, name: "" } as unknown as Pgoutput.Message
        }
        lastReceivedAt = Date.now()
        const next = afterMessage(watermark, message)
        watermark = next.watermark
        if (next.idle !== undefined) idleAt(next.idle)
        return message as unknown as Pgoutput.Message // pg-logical-replication only passes it on to the 'data' handler
      }
    }
    const plugin = new Plugin({ protoVersion: 1, publicationNames: [options.publication], messages: true })

    // the replication connection's own URL when given (SQL through a pooler), made by libpq's rules (`Connector`)
    const clientConfig = yield* Connector.nodePg(options.replicationUrl ?? options.url, applicationName, 10_000).pipe(
      Effect.mapError((e) => new ReplicationError({ reason: e._tag === "ConnectFailed" && !e.permanent ? "Connect" : "Refused", message: `replication connection: ${e.message}` }))
    )
    const service = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new LogicalReplicationService(clientConfig, { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } })),
      (s) => Effect.promise(() => s.destroy().then(() => undefined, () => undefined))
    )
    // Runs before the connection is destroyed: a socket read waiting for room in a full queue is released.
    yield* Effect.addFinalizer(() => Queue.shutdown(queue))

    // Socket side -> events, in order, each offered with backpressure (the socket is paused while the queue is full).
    // Never rejects: once the queue is shut down (the scope closed), a pending offer just ends.
    // Offered in batches (a transaction replayed from the spool is many events): one hand-over per batch, not per event.
    const batchSize = 256
    // With a gate, the events of a transaction sent at its commit are held until the standbys have that commit (its
    // end is known only then). One that grows past `holdLimit` events is let through once the standbys have the
    // primary's current flush position, which is past its commit (decoded before it was sent).
    const holdLimit = 4096
    let held: Array<ReplicationEvent> | undefined
    // A busy stream is read in bursts (see `ReadPacing`): the socket is not read while a pause is due.
    let pacing = ReadPacing.initial
    const pauseDue = () => {
      const next = ReadPacing.onMessage(pacing, performance.now())
      pacing = next.state
      return next.pauseMs
    }
    const onHandleError = (e: unknown): void =>
      void fail(e instanceof SpoolError
        ? new ReplicationError({ reason: "Spool", message: e.message })
        : new ReplicationError({ reason: "Protocol", message: `decoding the stream: ${describe(e)}` }))
    /**
     * Offers `events` in batches, synchronously while the queue has room; `undefined` when all were offered, or a
     * promise that offers the rest with backpressure (and ends early once the queue is shut down).
     */
    const offerNow = (events: Iterator<ReplicationEvent>): Promise<void> | undefined => {
      let batch: Array<ReplicationEvent> = []
      for (;;) {
        const next = events.next()
        if (!next.done) {
          batch.push(next.value)
          if (batch.length < batchSize) continue
        }
        if (batch.length > 0) {
          const rest = Queue.offerAllUnsafe(queue, batch)
          batch = []
          if (rest.length > 0) {
            return Effect.runPromiseExit(Queue.offerAll(queue, rest)).then((exit): Promise<void> | undefined => {
              if (exit._tag === "Success") return next.done ? undefined : offerNow(events)
              events.return?.(undefined) // shut down: a replay's spool file is dropped
              return undefined
            })
          }
        }
        if (next.done) return undefined
      }
    }
    // What needs to wait for something else: a Relation's types, and with a gate, the standbys.
    const handleWaiting = async (message: Message) => {
      if (message.tag === "relation") {
        const learnt = await Effect.runPromiseExit(types.learn(message.relation))
        if (learnt._tag === "Failure") {
          fail(new ReplicationError({ reason: "Ended", message: `looking up the types of ${message.relation.schema}.${message.relation.name}: ${describe(Cause.squash(learnt.cause))}` }))
          return
        }
      }
      if (gate !== undefined) {
        // a streamed transaction is replayed from the spool at its commit: it waits before the replay
        if (message.tag === "streamCommit") await gate.reached(message.endLsn)
        else if (message.tag === "message" && !message.transactional && !message.prefix.startsWith(heartbeatPrefix)) await gate.reached(await gate.flushNow())
        else if (message.tag === "begin") held = []
      }
      const events = assembler.push(message)
      if (held === undefined) return await offerNow(events)
      for (const event of events) held.push(event)
      if (message.tag === "commit") await gate!.reached(message.endLsn)
      else if (held.length >= holdLimit) await gate!.reached(await gate!.flushNow())
      else return
      const release = held
      held = undefined
      await offerNow(release[Symbol.iterator]())
    }
    /** Handles one message: `undefined` when done synchronously (the common case), or what it waits for. */
    const handle = (message: Message): Promise<void> | undefined => {
      try {
        if (message.tag === "relation" || gate !== undefined) return handleWaiting(message).catch(onHandleError)
        return offerNow(assembler.push(message))?.catch(onHandleError)
      } catch (e) {
        onHandleError(e)
        return undefined
      }
    }
    // Messages are handled as the socket delivers them (pg-logical-replication's own flow control, which awaits a
    // promise per message, is off). When one has to wait — for room in the queue, a type lookup, the standbys, or a
    // read pause — the socket is paused, and what it had already delivered waits here, in order.
    const backlog: Array<Message> = []
    let waiting = false
    const socket = () => (client as unknown as { connection?: { stream?: { pause?: () => void; resume?: () => void } } } | undefined)?.connection?.stream
    const drain = async () => {
      while (backlog.length > 0) {
        const pending = handle(backlog.shift()!)
        if (pending !== undefined) await pending
        const pauseMs = pauseDue()
        if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
      waiting = false
      socket()?.resume?.()
    }
    const waitFor = (until: Promise<unknown>) => {
      waiting = true
      socket()?.pause?.()
      void until.then(drain)
    }
    service.on("data", (_lsn: string, decoded: Pgoutput.Message) => {
      const message = decoded as unknown as Message
      // a streamed change's bytes are a view of the socket's buffer, which the next read reuses: held, it is copied
      if (waiting) return void backlog.push(message.tag === "streamedChange" ? { ...message, raw: Buffer.from(message.raw) } : message)
      const pending = handle(message)
      if (pending !== undefined) return waitFor(pending)
      const pauseMs = pauseDue()
      if (pauseMs > 0) waitFor(new Promise((resolve) => setTimeout(resolve, pauseMs)))
    })
    service.on("heartbeat", (lsn: string, _timestamp: number, shouldRespond: boolean) => {
      idleAt(Lsn.parseUnsafe(lsn))
      if (shouldRespond) sendStatus()
    })
    service.on("error", (e: unknown) =>
      fail(new ReplicationError({ reason: e instanceof DecodeError ? "Protocol" : "Ended", message: `replication connection: ${describe(e)}` })))

    // Before the server accepted START_REPLICATION a failure is this attempt's (and may be retried); afterwards, the
    // stream's.
    const connectOnce = Effect.callback<void, ReplicationError>((resume) => {
      let started = false
      const onStart = () => {
        started = true
        resume(Effect.void)
      }
      service.once("start", onStart)
      service.subscribe(plugin, streamedSlot).then(
        () => {
          const error = new ReplicationError({ reason: "Ended", message: `the replication connection of slot ${streamedSlot} ended` })
          if (started) fail(error)
          else resume(Effect.fail(error))
        },
        (e: unknown) => {
          const text = describe(e)
          if (started) return fail(new ReplicationError({ reason: "Ended", message: `replication from ${streamedSlot}: ${text}` }))
          service.off("start", onStart)
          const refused = ConnectFailure.classify(e)
          resume(Effect.fail(
            /is active for PID/.test(text)
              ? new ReplicationError({ reason: "SlotActive", message: `${text}: another walsender still holds the slot (a previous connection the server has not yet noticed is gone); waiting for it` })
              : refused.permanent
              ? new ReplicationError({ reason: "Refused", message: `starting replication from ${streamedSlot}: ${ConnectFailure.describe(refused)}` })
              : new ReplicationError({ reason: "Connect", message: `starting replication from ${streamedSlot}: ${text}` })
          ))
        }
      )
    })
    let refusals = 0
    yield* own.assertFresh
    yield* connectOnce.pipe(
      // said at the first refusal, then every 30th: the wait can be long (until the server notices the old connection)
      Effect.tapError((e) => (e.reason === "SlotActive" && refusals++ % 30 === 0 ? Effect.logWarning(e.message) : Effect.void)),
      Effect.retry({ while: (e) => e.reason === "SlotActive" && mode === "persistent", schedule: options.slotActiveRetry ?? Schedule.spaced("1 second") })
    )
    // where this connection resumes: the durable position every change below it was acknowledged at (said for operators,
    // and what a delivery check judges a session's redeliveries by)
    yield* Effect.logInfo(`stream ${options.streamId}: streaming from ${Lsn.format(startedAt)} (slot ${streamedSlot}, ${mode})`)

    // Saves what was acknowledged, then reports it. The save is the only way the reported position moves.
    // Progress from keepalives alone is saved at most once per heartbeat interval: a save writes WAL, which moves the
    // next keepalive, which would otherwise make an idle stream write a checkpoint every round for ever.
    const configuredHeartbeat = Duration.toMillis(Duration.fromInputUnsafe(options.heartbeatInterval ?? "30 seconds"))
    // while the failover slot settles (see SlotManager), idle progress is made and saved every second
    let heartbeatMillis = configuredHeartbeat
    const settling = options.settling ?? Effect.succeed(false)
    const refreshHeartbeat = Effect.map(settling, (on) => void (heartbeatMillis = on ? Math.min(1000, configuredHeartbeat) : configuredHeartbeat))
    let consumerAcknowledged = false
    let receipt: SaveReceipt = { walPosition: undefined }
    let lastSaveAt = 0
    const save = Effect.gen(function*() {
      const position = Watermark.toSave(watermark)
      if (position === undefined) return
      if (!consumerAcknowledged && Date.now() - lastSaveAt < heartbeatMillis) return
      // acknowledgements that arrive while this save runs are the next save's; a save that fails or is deferred is
      // tried again at the next round, not only after the heartbeat interval
      consumerAcknowledged = false
      const saved = yield* options.checkpoint.save({ lsn: position.lsn, inTransaction: position.inside, ...identity }).pipe(
        Effect.onError(() => Effect.sync(() => void (consumerAcknowledged = true)))
      )
      if (saved.deferred === true) {
        consumerAcknowledged = true
        return
      }
      lastSaveAt = Date.now()
      receipt = saved
      watermark = Watermark.saved(watermark, position)
      sendStatus()
    })
    // A save (or heartbeat) that fails is tried again next round (`Rounds.every`): nothing is reported to the server
    // that was not saved, so a failing save only holds positions back.
    const every = (interval: Duration.Input, effect: Effect.Effect<void, CheckpointError | OwnershipLost | LockBackendError>, what: string) =>
      Effect.forkScoped(Rounds.every(interval, effect, `stream ${options.streamId}: ${what}`))
    // One last save when the connection closes (shutdown or handover), while the guard may still prove ownership.
    // Bounded (see `finalSaveTimeout`): a save still waiting then is cancelled, and the next owner resumes from the last one.
    const finalSaveTimeout = Duration.fromInputUnsafe(options.finalSaveTimeout ?? "2 seconds")
    yield* Effect.addFinalizer(() =>
      Effect.ignore(Effect.timeoutOption(Effect.andThen(save, Effect.sync(() => sendStatus())), finalSaveTimeout).pipe(
        Effect.tap((done) => done._tag === "None" ? Effect.logWarning(`stream ${options.streamId}: the last checkpoint save did not finish within ` +
          `${Duration.format(finalSaveTimeout)} (the stream's write lock is held); the next owner delivers again from the last save`) : Effect.void)
      )))
    yield* every(options.saveInterval ?? "1 second", save, "saving the checkpoint")
    // Status updates on a timer of their own, at most a third of the server's wal_sender_timeout apart: while a slow
    // consumer keeps the queue full the socket is not read, so the server's keepalive requests wait unanswered, and
    // only these updates keep the walsender from timing the connection out.
    const [timeout] = yield* options.sql.unsafe<{ ms: number }>("SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'").pipe(
      Effect.orElseSucceed(() => [] as ReadonlyArray<{ ms: number }>)
    )
    const statusMillis = Math.min(
      Duration.toMillis(Duration.fromInputUnsafe(options.statusInterval ?? "10 seconds")),
      timeout !== undefined && timeout.ms > 0 ? Math.max(100, Math.floor(timeout.ms / 3)) : Number.POSITIVE_INFINITY
    )
    yield* every(Duration.millis(statusMillis), Effect.sync(() => sendStatus()), "sending a status update")
    yield* every(Duration.millis(Math.max(100, Math.min(250, Math.floor(configuredHeartbeat / 4)))), Effect.gen(function*() {
      yield* refreshHeartbeat
      if (Date.now() - lastReceivedAt < heartbeatMillis || watermark.open || watermark.acknowledged < watermark.received) return
      lastReceivedAt = Date.now()
      yield* options.sql.unsafe("SELECT pg_logical_emit_message(false, $1, '')::text", [heartbeatPrefix + options.streamId]).pipe(
        Effect.catch((e) => Effect.logWarning(`heartbeat message for stream ${options.streamId} failed: ${String(e)}`))
      )
    }), "writing a heartbeat message")

    return {
      events: Stream.fromQueue(queue),
      acknowledge: (position) =>
        Effect.suspend(() => {
          const next = typeof position === "bigint" ? Watermark.ack(watermark, position) : Watermark.ackInside(watermark, position)
          if (next instanceof Watermark.AckAhead) return Effect.fail(next)
          if (next.acknowledged > watermark.acknowledged || next.inside !== watermark.inside) consumerAcknowledged = true
          watermark = next
          return Effect.void
        }),
      durable: Effect.sync(() => ({ lsn: watermark.durable, inTransaction: watermark.durableInside, ...identity, ...receipt })),
      startedAt
    } satisfies ReplicationStream
  })
