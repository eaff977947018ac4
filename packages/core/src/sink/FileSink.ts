/**
 * FileSink: `--sink file:PATH` — the changes appended to a file as NDJSON, the file being also the stream's durable
 * position (its `CheckpointStore`), so that a restart neither loses nor repeats an acknowledged change.
 *
 * **What it guarantees**
 * - A transaction's lines are appended as they come, then a `{"type":"commit",...}` line (its `end_lsn`, the epoch it
 *   was written under, and what the position belongs to: `slot`, `system_id`, `timeline`), then `fsync` — and only
 *   then is it acknowledged.
 * - Positions saved without a transaction of their own (idle progress) are `{"type":"checkpoint",...}` lines, fsynced
 *   before the save returns, and only where no transaction is half written; a position the file's commit lines
 *   already hold is not written again.
 * - At every connection's start the tail is read back: the durable position is that of the last `commit` or
 *   `checkpoint` line. What follows it — the lines of a transaction that never committed to the file, or a torn last
 *   line after a crash — is cut off; those changes come again. So the file never holds a torn line, nor a change
 *   twice after a restart or a reconnect.
 * - One writer: the file's lock (`FileLock`) is held for the holding period, and a file whose last line was written
 *   under a higher epoch than this instance's is refused with `OwnershipLost`: a newer owner has written there.
 *
 * **Details**: a save that cannot be placed now (lines of a transaction half written, and a position past the file's
 * last commit line) is `deferred` and tried again at the next round; it never waits. So a connection's last save,
 * in a finalizer, ends at once.
 */
import { closeSync, existsSync, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs"
import * as Lsn from "../Lsn.ts"
import { OwnershipLost } from "../ownership/Ownership.ts"
import * as Checkpoint from "../replication/Checkpoint.ts"
import { Effect, type Scope } from "effect"
import * as FileLock from "./FileLock.ts"
import { type Fence, type Sink, SinkError } from "./Sink.ts"

interface Marker {
  readonly type: "commit" | "checkpoint"
  readonly lsn: string
  readonly slot: string
  readonly system_id: string
  readonly timeline: number
  /** Absent in files written before epochs were recorded: 0. */
  readonly epoch?: number
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

/** One holding period's use of the file: its lock, the checkpoint store, and the sink. */
export interface FilePeriod {
  readonly checkpoint: Checkpoint.CheckpointStore["Service"]
  readonly sink: Sink
  /** The line that ends a transaction (or records a non-transactional message's position) in the file. */
  readonly commitLine: (fields: {
    readonly xid: number
    readonly commitLsn: Lsn.Lsn
    readonly endLsn: Lsn.Lsn
    readonly commitTime: string
    readonly position: Checkpoint.DurablePosition
  }) => string
}

export interface FileSink {
  readonly path: string
  /** Opens the file for a holding period (lock, descriptor); closed with the scope. */
  readonly open: (fence: Fence) => Effect.Effect<FilePeriod, SinkError | OwnershipLost, Scope.Scope>
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Checks that `path` can be written (creating it when missing), before anything connects. */
export const make = (path: string): Effect.Effect<FileSink, SinkError> =>
  Effect.try({
    try: () => {
      closeSync(openSync(path, existsSync(path) ? "r+" : "a+"))
      return { path, open: (fence: Fence) => open(path, fence) }
    },
    catch: (e) => new SinkError({ message: `opening ${path}: ${message(e)}` })
  })

const open = (path: string, fence: Fence): Effect.Effect<FilePeriod, SinkError | OwnershipLost, Scope.Scope> =>
  Effect.gen(function*() {
    yield* FileLock.acquire(path, fence)
    const fd = yield* Effect.acquireRelease(
      Effect.try({ try: () => openSync(path, "r+"), catch: (e) => new SinkError({ message: `opening ${path}: ${message(e)}` }) }),
      (fd) => Effect.sync(() => closeSync(fd))
    )
    let offset = 0
    /** No transaction is half written at the end of the file. */
    let atBoundary = true
    /** The position of the last marker appended, and of the last one fsynced. */
    let written = 0n
    let durable = 0n
    /** The position of the last commit line built (it is in the next batch written). */
    let pending = 0n

    const writeAll = (bytes: Buffer, length: number) => {
      let done = 0
      while (done < length) done += writeSync(fd, bytes, done, length - done, offset + done)
      offset += length
    }
    const append = (text: string) => {
      const bytes = Buffer.from(text)
      writeAll(bytes, bytes.length)
    }
    // Lines are encoded straight into one reused buffer and written from it when it is full: no joined string, no
    // buffer allocated per batch. A line is at most 3 bytes per UTF-16 unit, so one that fits by that bound fits.
    const staging = Buffer.allocUnsafe(1 << 20)
    const appendLines = (lines: ReadonlyArray<string>) => {
      let at = 0
      for (const line of lines) {
        if (at + line.length * 3 + 1 > staging.length) {
          if (at > 0) writeAll(staging, at)
          at = 0
          if (line.length * 3 + 1 > staging.length) {
            append(`${line}\n`) // a line larger than the buffer: on its own
            continue
          }
        }
        at += staging.write(line, at)
        staging[at++] = 0x0a
      }
      if (at > 0) writeAll(staging, at)
    }
    // fsync off the event loop (libuv's pool): the socket is read meanwhile. Writes stay synchronous, to the page
    // cache, so every byte before a marker has been handed to the kernel before that marker: a killed process never
    // leaves a hole before its last line.
    const sync = <E>(failed: (e: unknown) => E) =>
      Effect.suspend(() => {
        const upTo = written
        return Effect.callback<void, E>((resume) =>
          fsync(fd, (e) => {
            if (e) return resume(Effect.fail(failed(e)))
            if (upTo > durable) durable = upTo
            resume(Effect.void)
          }))
      })
    const fail = (what: string) => (e: unknown) => new SinkError({ message: `${what} ${path}: ${message(e)}` })

    // Every connection starts from the file as it is: what follows the last marker is cut off (a transaction the last
    // connection or process left half written, a torn line), and a newer owner's last line is refused.
    const load: Checkpoint.CheckpointStore["Service"]["load"] = Effect.gen(function*() {
      const found = yield* Effect.try({
        try: () => {
          const last = lastMarker(fd)
          if (last.keep < fstatSync(fd).size) {
            ftruncateSync(fd, last.keep)
            fsyncSync(fd)
          }
          return last
        },
        catch: (e) => new Checkpoint.CheckpointError({ message: `reading back ${path}: ${message(e)}` })
      })
      const epoch = found.marker?.epoch ?? 0
      if (epoch > fence.epoch) {
        return yield* new OwnershipLost({
          streamId: fence.streamId,
          epoch: fence.epoch,
          message: `${path} was last written by a newer owner (epoch ${epoch}; this instance holds epoch ${fence.epoch}): not writing to it`
        })
      }
      offset = found.keep
      atBoundary = true
      const lsn = found.marker === undefined ? 0n : Lsn.parseUnsafe(found.marker.lsn)
      written = durable = pending = lsn
      const marker = found.marker
      return marker === undefined ? undefined : { lsn, systemId: marker.system_id, timeline: marker.timeline, slotName: marker.slot }
    })

    const save: Checkpoint.CheckpointStore["Service"]["save"] = (p) =>
      Effect.gen(function*() {
        const failed = (e: unknown) => new Checkpoint.CheckpointError({ message: `saving the position in ${path}: ${message(e)}` })
        if (p.lsn <= durable) return { walPosition: undefined } // the file's commit lines hold it already
        if (p.lsn <= written) {
          yield* sync(failed) // written, not yet fsynced: make it durable
          return { walPosition: undefined }
        }
        // never between a transaction's lines: such a position waits for the next round
        if (!atBoundary) return { walPosition: undefined, deferred: true }
        yield* Effect.try({
          try: () => {
            append(`${JSON.stringify({ type: "checkpoint", epoch: fence.epoch, lsn: Lsn.format(p.lsn), slot: p.slotName, system_id: p.systemId, timeline: p.timeline })}\n`)
            written = p.lsn
          },
          catch: failed
        })
        yield* sync(failed)
        return { walPosition: undefined }
      })

    const sink: Sink = {
      write: (lines, boundary) =>
        lines.length === 0 ? Effect.void : Effect.andThen(fence.assertFresh, Effect.try({
          try: () => {
            appendLines(lines)
            atBoundary = boundary
            written = pending
          },
          catch: fail("writing to")
        })),
      // the caller has written the commit line last: make it all durable
      commit: Effect.andThen(fence.assertFresh, sync(fail("syncing")))
    }

    const commitLine: FilePeriod["commitLine"] = ({ commitLsn, commitTime, endLsn, position, xid }) => {
      pending = endLsn
      return JSON.stringify({
        type: "commit",
        epoch: fence.epoch,
        xid,
        commit_lsn: Lsn.format(commitLsn),
        lsn: Lsn.format(endLsn),
        commit_time: commitTime,
        slot: position.slotName,
        system_id: position.systemId,
        timeline: position.timeline
      })
    }

    return { checkpoint: { load, save }, sink, commitLine }
  })
