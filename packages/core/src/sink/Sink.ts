/**
 * Sink: where `slotkeeper run` writes the changes (NDJSON lines, see `Ndjson`), and what makes them durable before
 * they are acknowledged — fenced by the ownership epoch.
 *
 * A transaction's lines are written as they come (`write`, in batches, so a huge transaction never sits in memory)
 * and made durable at its commit (`commit`); only then is the commit acknowledged to the stream. Lines of a
 * transaction that never reached `commit` may be written again after a restart (at-least-once; their `commit_lsn`
 * and `seq` identify them).
 *
 * **Fencing.** A sink is opened for one replication connection of one holding period, with its `Fence`: the stream,
 * the epoch (carried on every line, and by the http sink in a header), and `assertFresh`, checked right before each
 * write so that an instance that woke from a pause past its deadline writes nothing. A sink that learns that a newer
 * owner has written (an http `409`, a file whose last line has a higher epoch) fails with `OwnershipLost`: the
 * instance gives the stream up and competes again. Nothing of a sink outlives its connection: a batch half sent or
 * half written is never carried into the next one.
 */
import type { OwnershipLost } from "../ownership/Ownership.ts"
import { Effect, Schema } from "effect"

export class SinkError extends Schema.TaggedError<SinkError>()("SinkError", { message: Schema.String }) {}

/** What a sink writes under: the ownership it was opened for. */
export interface Fence {
  readonly streamId: string
  readonly epoch: number
  /** `Ownership.assertFresh`: fails past the deadline, or once the loss is known. */
  readonly assertFresh: Effect.Effect<void, OwnershipLost>
  /**
   * The durable position the connection resumed from: every change committed below it was acknowledged before, and
   * this connection never sends it (the http sink says it in `Slotkeeper-Resumed-From`).
   */
  readonly resumedFrom?: bigint | undefined
}

export interface Sink {
  /**
   * Writes `lines`. `boundary`: the last of them ends a transaction (or is outside one) — no transaction is left
   * half written (the file sink places its position markers only there).
   */
  readonly write: (lines: ReadonlyArray<string>, boundary: boolean) => Effect.Effect<void, SinkError | OwnershipLost>
  /** Everything written so far is durable (as durable as this sink can make it). */
  readonly commit: Effect.Effect<void, SinkError | OwnershipLost>
}

let stdoutErrorsHandled = false

/**
 * Standard output: each batch is handed to the pipe, and `commit` waits until it was (the reader's durability is the
 * reader's business). Logs never go here.
 *
 * **Details**: a reader that goes away (`slotkeeper run | head`) makes the next write fail with `EPIPE`: that is this
 * sink's `SinkError`, so the stream stops, unacknowledged, and the process exits 1 through its finalizers (an
 * embedded server is stopped). Node would otherwise crash on the stream's unhandled `error` event, skipping them.
 */
export const stdout = (fence: Fence): Sink => ({
  write: (lines) =>
    lines.length === 0 ? Effect.void : Effect.andThen(fence.assertFresh, Effect.callback<void, SinkError>((resume) => {
      if (!stdoutErrorsHandled) {
        stdoutErrorsHandled = true
        process.stdout.on("error", () => {}) // reported through the write callback below
      }
      process.stdout.write(`${lines.join("\n")}\n`, (error) =>
        resume(error ? Effect.fail(new SinkError({ message: `writing to stdout: ${error.message}` })) : Effect.void))
    })),
  commit: Effect.void
})
