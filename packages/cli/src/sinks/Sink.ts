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

/**
 * Standard output: each batch is handed to the pipe, and `commit` waits until it was (the reader's durability is the
 * reader's business). Logs never go here.
 */
export const stdout: Sink = {
  write: (lines) =>
    lines.length === 0 ? Effect.void : Effect.callback<void, SinkError>((resume) => {
      process.stdout.write(`${lines.join("\n")}\n`, (error) =>
        resume(error ? Effect.fail(new SinkError({ message: `writing to stdout: ${error.message}` })) : Effect.void))
    }),
  commit: Effect.void
}
