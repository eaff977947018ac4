/**
 * SinkDelivery: a stream's changes written to a sink as NDJSON lines (`Ndjson`) and acknowledged once the sink has
 * made them durable — exactly what `slotkeeper run` does with each replication connection, for an Effect app to
 * compose the same way (`Delivery.layer(options, sinkDelivery.consume)`, with `checkpoint` for a file).
 *
 * **Details**
 * - One sink per replication connection and holding period, opened with the connection's `Fence` (stream, epoch,
 *   `assertFresh`, the position it resumed from): nothing half sent or half written carries into the next one.
 * - Events come in arrays of what has arrived. Their lines are written (in pieces of at most 1,000 lines or 1 MiB,
 *   so neither a huge transaction nor huge rows sit in memory), then the sink is made durable and the last commit of the array acknowledged — once per array,
 *   not once per transaction: many small transactions share one fsync or one POST. A transaction still open at the
 *   end of an array is acknowledged with a later one. Counted as delivered (`StreamMetrics.delivered`) only once
 *   acknowledged.
 * - A file target is also where the position lives: `checkpoint` opens (and locks) the file for each holding
 *   period, and each commit's line is followed by a commit marker that the next connection reads back.
 *
 * **Gotchas**
 * - `consume` needs the `Ownership` of the holding period (`Delivery` provides it): the epoch on every line is that
 *   one's.
 * - With a file target, pass `checkpoint` to `Delivery.layer` too; without it the file would not be the position's
 *   store and a restart could repeat or skip lines.
 */
import { Effect, type Scope, Stream } from "effect"
import type * as Lsn from "../Lsn.ts"
import { Ownership, type OwnershipLost } from "../ownership/Ownership.ts"
import * as Checkpoint from "../replication/Checkpoint.ts"
import type * as ReplicationStream from "../replication/ReplicationStream.ts"
import type * as Watermark from "../replication/Watermark.ts"
import * as StreamMetrics from "../service/StreamMetrics.ts"
import * as FileSink from "./FileSink.ts"
import * as HttpSink from "./HttpSink.ts"
import * as Ndjson from "./Ndjson.ts"
import * as Sink from "./Sink.ts"

/** Where the lines go. */
export type Target =
  | { readonly _tag: "Stdout" }
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Http"; readonly url: string; readonly onRejected?: "fail" | "skip" | undefined }

/** What consuming a connection can fail with: the sink's errors, and the connection's own. */
export type ConsumeError =
  | Sink.SinkError
  | OwnershipLost
  | Watermark.AckAhead
  | Stream.Error<ReplicationStream.ReplicationStream["events"]>

export interface SinkDelivery {
  /** `Delivery`'s consumer: one replication connection's events, to the sink. */
  readonly consume: (connection: ReplicationStream.ReplicationStream) => Effect.Effect<void, ConsumeError, Ownership>
  /** For `Delivery.layer`'s `checkpoint` option: the file's own position store (a file target only). */
  readonly checkpoint: Effect.Effect<Checkpoint.CheckpointStore["Service"], Checkpoint.CheckpointError | OwnershipLost, Ownership | Scope.Scope> | undefined
  /** The last position acknowledged by this instance (`undefined`: none yet). */
  readonly acknowledged: () => Lsn.Lsn | undefined
}

/** A `SinkDelivery` of `streamId` to `target`; a file that cannot be opened fails here, before anything connects. */
export const make = (streamId: string, target: Target): Effect.Effect<SinkDelivery, Sink.SinkError> =>
  Effect.gen(function*() {
    const file = target._tag === "File" ? yield* FileSink.make(target.path) : undefined
    const http = target._tag === "Http" ? HttpSink.make({ url: target.url, onRejected: target.onRejected ?? "fail" }) : undefined
    // the file as this holding period has it open (locked), while it lasts
    let period: FileSink.FilePeriod | undefined
    let acknowledged: Lsn.Lsn | undefined
    const fenceOf = (own: Ownership["Service"]): Sink.Fence => ({ streamId, epoch: own.epoch, assertFresh: own.assertFresh })

    const consume = (connection: ReplicationStream.ReplicationStream) =>
      Effect.gen(function*() {
        const own = yield* Ownership
        const fence: Sink.Fence = { ...fenceOf(own), resumedFrom: connection.startedAt }
        const sink = period?.sink ?? (http !== undefined ? http.open(fence) : Sink.stdout(fence))
        // what the file's commit lines say the position belongs to (slot, system, timeline): one per connection
        const identity = period === undefined ? undefined : yield* connection.durable
        let inTransaction = false
        // since the last acknowledgement: counted as delivered once acknowledged
        let changes = 0
        let bytes = 0
        let transactions = 0
        let sinkMs = 0
        // the sink's own time, for slotkeeper_sink_write_seconds
        const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.suspend(() => {
            const t = performance.now()
            return Effect.ensuring(effect, Effect.sync(() => { sinkMs += performance.now() - t }))
          })
        return yield* Stream.runForEachArray(connection.events, (events) =>
          Effect.gen(function*() {
            const lines: Array<string> = []
            // what `lines` holds, in UTF-16 units: written at 1,000 lines or 1 MiB, whichever comes first
            let pendingChars = 0
            let position: Lsn.Lsn | undefined
            let lastCommitTime: string | undefined
            let firstCommitTime: string | undefined
            for (const event of events) {
              if (event._tag === "Begin") inTransaction = true
              const text = Ndjson.line(event, own.epoch)
              if (text !== undefined) {
                lines.push(text)
                pendingChars += text.length
                if (event._tag !== "Schema") changes++
                bytes += Buffer.byteLength(text) + 1
              }
              if (event._tag === "Commit" || (event._tag === "Message" && !event.transactional)) {
                inTransaction = false
                position = event._tag === "Commit" ? event.endLsn : event.ackPosition
                if (event._tag === "Commit") {
                  lastCommitTime = event.commitTime
                  firstCommitTime ??= event.commitTime
                }
                transactions++
                if (period !== undefined && identity !== undefined) {
                  // the file's own record of how far it is: read back at the next connection
                  lines.push(event._tag === "Commit"
                    ? period.commitLine({ xid: event.xid, commitLsn: event.commitLsn, endLsn: event.endLsn, commitTime: event.commitTime, position: identity })
                    : period.commitLine({ xid: 0, commitLsn: event.lsn, endLsn: position, commitTime: "", position: identity }))
                }
              }
              if (lines.length >= 1000 || pendingChars >= 1 << 20) {
                pendingChars = 0
                yield* timed(sink.write(lines.splice(0), !inTransaction))
              }
            }
            yield* timed(sink.write(lines, !inTransaction))
            if (position !== undefined) {
              yield* timed(sink.commit)
              yield* connection.acknowledge(position)
              acknowledged = position
              yield* StreamMetrics.delivered(streamId, { changes, transactions, bytes, sinkSeconds: sinkMs / 1000, lastCommitTime, firstCommitTime })
              changes = 0
              bytes = 0
              transactions = 0
              sinkMs = 0
            }
          }))
      })

    // the file is opened (and locked) for each holding period, in the owned scope
    const checkpoint = file === undefined ? undefined : Effect.gen(function*() {
      const own = yield* Ownership
      const opened = yield* file.open(fenceOf(own)).pipe(
        Effect.catchTag("SinkError", (e) => Effect.fail(new Checkpoint.CheckpointError({ message: e.message })))
      )
      period = opened
      yield* Effect.addFinalizer(() => Effect.sync(() => { period = undefined }))
      return opened.checkpoint
    })

    return { consume, checkpoint, acknowledged: () => acknowledged }
  })
