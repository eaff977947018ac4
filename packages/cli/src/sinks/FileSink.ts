/**
 * FileSink: `--sink file:PATH` — the changes appended to a file as NDJSON, the file being also the stream's durable
 * position (its `CheckpointStore`), so that a restart neither loses nor repeats an acknowledged change.
 *
 * **What it guarantees**
 * - A transaction's lines are appended as they come, then a `{"type":"commit",...}` line (its `end_lsn` and what the
 *   position belongs to: `slot`, `system_id`, `timeline`), then `fsync` — and only then is it acknowledged.
 * - Positions saved without a transaction of their own (idle progress) are `{"type":"checkpoint",...}` lines, also
 *   fsynced before the save returns; never in the middle of a transaction's lines (a save waits for its commit line).
 * - On start the tail is read back: the durable position is that of the last `commit` or `checkpoint` line. What
 *   follows it — the lines of a transaction that never committed to the file, or a torn last line after a crash — is
 *   cut off; those changes come again. So the file never holds a torn line, nor a change twice after a restart.
 */
import { closeSync, existsSync, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs"
import { Checkpoint, Lsn } from "@slotkeeper/core"
import { Deferred, Effect, type Scope } from "effect"
import { type Sink, SinkError } from "./Sink.ts"

interface Marker {
  readonly type: "commit" | "checkpoint"
  readonly lsn: string
  readonly slot: string
  readonly system_id: string
  readonly timeline: number
}

/** Reads backwards from the end for the last complete marker line; returns it and the byte offset just after it. */
const lastMarker = (fd: number): { readonly marker: Marker | undefined; readonly keep: number } => {
  const size = fstatSync(fd).size
  const chunk = 1 << 16
  let tail = Buffer.alloc(0)
  let position = size
  while (position > 0) {
    const from = Math.max(0, position - chunk)
    const piece = Buffer.alloc(position - from)
    readSync(fd, piece, 0, piece.length, from)
    tail = Buffer.concat([piece, tail])
    position = from
    // complete lines are those followed by "\n"; the text after the last "\n" is torn (or empty)
    let end = tail.lastIndexOf(0x0a)
    while (end >= 0) {
      const start = tail.lastIndexOf(0x0a, end - 1) + 1
      if (start === 0 && position > 0) break // the line may begin before this chunk: read more
      const text = tail.toString("utf8", start, end)
      if (text.startsWith("{\"type\":\"commit\"") || text.startsWith("{\"type\":\"checkpoint\"")) {
        try {
          const marker = JSON.parse(text) as Marker
          return { marker, keep: position + end + 1 }
        } catch {
          // not a complete marker: keep looking further back
        }
      }
      end = start - 1
    }
  }
  return { marker: undefined, keep: 0 }
}

export interface FileSink {
  readonly sink: Sink
  readonly checkpoint: Checkpoint.CheckpointStoreService
  /** The transaction's identity for its commit line (set by the caller from the stream). */
  readonly commitLine: (fields: { readonly xid: number; readonly commitLsn: Lsn.Lsn; readonly endLsn: Lsn.Lsn; readonly commitTime: string; readonly position: Checkpoint.DurablePosition }) => string
}

export const make = (path: string): Effect.Effect<FileSink, SinkError, Scope.Scope> =>
  Effect.gen(function*() {
    const fd = yield* Effect.acquireRelease(
      Effect.try({
        try: () => openSync(path, existsSync(path) ? "r+" : "w+"),
        catch: (e) => new SinkError({ message: `opening ${path}: ${e instanceof Error ? e.message : String(e)}` })
      }),
      (fd) => Effect.sync(() => closeSync(fd))
    )
    // repair: cut what follows the last marker (an uncommitted transaction's lines, a torn line)
    const { keep, marker } = yield* Effect.try({
      try: () => {
        const found = lastMarker(fd)
        if (found.keep < fstatSync(fd).size) {
          ftruncateSync(fd, found.keep)
          fsyncSync(fd)
        }
        return found
      },
      catch: (e) => new SinkError({ message: `reading back ${path}: ${e instanceof Error ? e.message : String(e)}` })
    })
    let offset = keep
    let inTransaction = false
    const waiting: Array<Deferred.Deferred<void>> = []

    const append = (text: string) => {
      const bytes = Buffer.from(text)
      let written = 0
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written, offset + written)
      offset += bytes.length
    }
    // fsync off the event loop (libuv's pool): the socket is read meanwhile. Writes stay synchronous, to the page
    // cache, so every byte before a marker has been handed to the kernel before that marker: a killed process never
    // leaves a hole before its last line.
    const sync = <E>(failed: (e: unknown) => E) =>
      Effect.callback<void, E>((resume) => fsync(fd, (e) => resume(e ? Effect.fail(failed(e)) : Effect.void)))
    const fail = (what: string) => (e: unknown) => new SinkError({ message: `${what} ${path}: ${e instanceof Error ? e.message : String(e)}` })

    const sink: Sink = {
      write: (lines) =>
        lines.length === 0 ? Effect.void : Effect.try({
          try: () => {
            inTransaction = true
            append(`${lines.join("\n")}\n`)
          },
          catch: fail("writing to")
        }),
      // the caller has written the commit line last: make it all durable, then let waiting saves go
      commit: sync(fail("syncing")).pipe(
        Effect.andThen(Effect.sync(() => {
          inTransaction = false
          return waiting.splice(0)
        })),
        Effect.flatMap((ready) => Effect.forEach(ready, (d) => Deferred.succeed(d, undefined), { discard: true }))
      )
    }

    const checkpoint: Checkpoint.CheckpointStoreService = {
      load: Effect.succeed(
        marker === undefined ? undefined : { lsn: Lsn.parseUnsafe(marker.lsn), systemId: marker.system_id, timeline: marker.timeline, slotName: marker.slot }
      ),
      save: (p) =>
        Effect.gen(function*() {
          if (inTransaction) {
            // never inside a transaction's lines: after its commit line
            const ready = yield* Deferred.make<void>()
            waiting.push(ready)
            yield* Deferred.await(ready)
          }
          const failed = (e: unknown) => new Checkpoint.CheckpointError({ message: `saving the position in ${path}: ${e instanceof Error ? e.message : String(e)}` })
          yield* Effect.try({
            try: () => append(`${JSON.stringify({ type: "checkpoint", lsn: Lsn.format(p.lsn), slot: p.slotName, system_id: p.systemId, timeline: p.timeline })}\n`),
            catch: failed
          })
          yield* sync(failed)
          return { walPosition: undefined }
        })
    }

    const commitLine: FileSink["commitLine"] = ({ commitLsn, commitTime, endLsn, position, xid }) =>
      JSON.stringify({
        type: "commit",
        xid,
        commit_lsn: Lsn.format(commitLsn),
        lsn: Lsn.format(endLsn),
        commit_time: commitTime,
        slot: position.slotName,
        system_id: position.systemId,
        timeline: position.timeline
      })

    return { sink, checkpoint, commitLine }
  })
