/**
 * Sink: where `slotkeeper run` writes the changes (NDJSON lines, see `Ndjson`), and what makes them durable before
 * they are acknowledged.
 *
 * A transaction's lines are written as they come (`write`, in batches, so a huge transaction never sits in memory)
 * and made durable at its commit (`commit`); only then is the commit acknowledged to the stream. Lines of a
 * transaction that never reached `commit` may be written again after a restart (at-least-once; their `commit_lsn`
 * and `seq` identify them).
 */
import { Effect, Schema } from "effect"

export class SinkError extends Schema.TaggedError<SinkError>()("SinkError", { message: Schema.String }) {}

export interface Sink {
  readonly write: (lines: ReadonlyArray<string>) => Effect.Effect<void, SinkError>
  /** Everything written so far is durable (as durable as this sink can make it). */
  readonly commit: Effect.Effect<void, SinkError>
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
export const stdout: Sink = {
  write: (lines) =>
    lines.length === 0 ? Effect.void : Effect.callback<void, SinkError>((resume) => {
      if (!stdoutErrorsHandled) {
        stdoutErrorsHandled = true
        process.stdout.on("error", () => {}) // reported through the write callback below
      }
      process.stdout.write(`${lines.join("\n")}\n`, (error) =>
        resume(error ? Effect.fail(new SinkError({ message: `writing to stdout: ${error.message}` })) : Effect.void))
    }),
  commit: Effect.void
}
