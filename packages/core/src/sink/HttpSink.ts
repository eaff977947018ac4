/**
 * HttpSink: the changes POSTed to an HTTP endpoint as NDJSON batches; a commit is acknowledged to the stream only
 * after the endpoint answered 2xx for every line up to it.
 *
 * **What it guarantees**
 * - At-least-once: a batch that may not have arrived (no answer, a timeout, a 5xx) is sent again, unchanged, until a
 *   2xx; only then does `commit` return and the stream acknowledge. A batch can therefore arrive twice; each line's
 *   `commit_lsn` and `seq` identify it, so the receiver can drop the second copy exactly.
 * - Order: one request at a time, in stream order. A batch is never sent before the previous one was accepted.
 * - Bounded memory: lines are buffered up to `maxBatchLines` / `maxBatchBytes`, then sent (a huge transaction goes
 *   out in several batches before its commit).
 *
 * - Fenced: every request carries `Slotkeeper-Stream` and `Slotkeeper-Epoch` (the ownership epoch, also on every
 *   line), and is sent only after `assertFresh` (ownership confirmed within its deadline by the monotonic clock). An
 *   answer `409 Conflict` means "a newer owner has written here" (see `FencingReceiver` in the test kit for a receiver
 *   that enforces it): that is `OwnershipLost` — nothing is acknowledged, nothing retried, and the instance gives the
 *   stream up and competes again.
 *
 * **Details**
 * - Retried (capped exponential backoff, for as long as it takes, a warning every few attempts): connection errors,
 *   timeouts, 5xx, and the 4xx that mean "later" (408, 425, 429). The stream waits meanwhile, and its slot's lag
 *   shows it; losing ownership interrupts the wait like any other dependent.
 * - Any other 4xx is an answer that retrying cannot change (a malformed batch, a missing route, bad credentials).
 *   Policy `fail` (default) stops the stream with the status and the start of the response body, so the process
 *   exits 1 and the changes stay in the slot. Policy `skip` logs the batch's first and last position as an error and
 *   goes on: those changes are lost for this endpoint, by choice.
 * - Redirects are not followed: a client following a 301, 302 or 303 turns the POST into a GET, whose 2xx would count
 *   a batch as delivered that never was. A 3xx stops the stream with the status and where it pointed; the fix is the
 *   final URL in `--sink`.
 * - Credentials in the URL (`https://user:password@host/...`) are sent as HTTP Basic authentication and never logged.
 * - Each request carries `Content-Type: application/x-ndjson`, and `Slotkeeper-Resumed-From: <LSN>`: the durable
 *   position its connection resumed from (changes committed below it were acknowledged before and are never sent by
 *   it; a receiver that sees one again from an earlier connection may drop it).
 * - A sink is opened per replication connection: a batch half sent by one connection (its lines buffered, or a
 *   request refused) is never sent by the next, which starts again from the durable position.
 */
import * as Lsn from "../Lsn.ts"
import { OwnershipLost } from "../ownership/Ownership.ts"
import { Duration, Effect, Schedule } from "effect"
import * as Redact from "../Redact.ts"
import { type Fence, type Sink, SinkError } from "./Sink.ts"
import * as Retry from "../internal/retry.ts"

export interface HttpSinkOptions {
  readonly url: string
  /** What to do on a 4xx that retrying cannot fix. Default `fail`. */
  readonly onRejected?: "fail" | "skip"
  /** Lines buffered before a batch is sent without waiting for a commit (default 5,000). */
  readonly maxBatchLines?: number
  /** Bytes buffered before a batch is sent without waiting for a commit (default 4 MiB). */
  readonly maxBatchBytes?: number
  /** One request's timeout (default 30 s); a timed-out request is sent again. */
  readonly requestTimeout?: Duration.Input
  /** Backoff between attempts: from this (default 200 ms), doubling, ... */
  readonly retryBase?: Duration.Input
  /** ... up to this (default 10 s). */
  readonly retryCap?: Duration.Input
}

/** A failed attempt: retried unless `final`. */
class Attempt {
  readonly message: string
  readonly final: boolean
  constructor(message: string, final: boolean) {
    this.message = message
    this.final = final
  }
}

/** Statuses that ask to come back later. */
const later = new Set([408, 425, 429])

export interface HttpSink {
  /** The sink of one replication connection, under `fence`. */
  readonly open: (fence: Fence) => Sink
  /** Requests sent so far (all connections). */
  readonly requests: () => number
}

export const make = (options: HttpSinkOptions): HttpSink => {
  const parsed = new URL(options.url)
  const baseHeaders: Record<string, string> = { "content-type": "application/x-ndjson" }
  if (parsed.username !== "" || parsed.password !== "") {
    const credentials = `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`
    baseHeaders.authorization = `Basic ${Buffer.from(credentials).toString("base64")}`
    parsed.username = ""
    parsed.password = ""
  }
  const target = parsed.toString()
  const shown = Redact.url(options.url)
  const maxLines = options.maxBatchLines ?? 5_000
  const maxBytes = options.maxBatchBytes ?? 4 * 1024 * 1024
  const timeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.requestTimeout ?? "30 seconds"))
  const schedule = Retry.capped(options.retryBase ?? "200 millis", options.retryCap ?? "10 seconds").pipe(Schedule.jittered)
  let requests = 0

  const open = (fence: Fence): Sink => {
    const headers: Record<string, string> = { ...baseHeaders, "slotkeeper-stream": fence.streamId, "slotkeeper-epoch": String(fence.epoch) }
    if (fence.resumedFrom !== undefined) headers["slotkeeper-resumed-from"] = Lsn.format(fence.resumedFrom)
    let buffer: Array<string> = []
    let bytes = 0

    const post = (body: string) =>
      Effect.tryPromise({
        try: async (signal) => {
          requests++
          const response = await fetch(target, {
            method: "POST",
            headers,
            body,
            redirect: "manual",
            signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
          })
          const text = await response.text().catch(() => "")
          return { status: response.status, text, location: response.headers.get("location") }
        },
        catch: (e) => new Attempt(`POST ${shown}: ${(e as Error).name === "TimeoutError" ? `no answer within ${timeoutMs} ms` : (e as Error).message}`, false)
      }).pipe(
        Effect.flatMap(({ location, status, text }): Effect.Effect<void, Attempt | SinkError | OwnershipLost> => {
          if (status >= 200 && status < 300) return Effect.void
          const answer = `${status}${text.length > 0 ? ` ${JSON.stringify(text.slice(0, 200))}` : ""}`
          if (status === 409) {
            return Effect.fail(new OwnershipLost({
              streamId: fence.streamId,
              epoch: fence.epoch,
              message: `the sink answered ${answer} to epoch ${fence.epoch}: a newer owner has written there`
            }))
          }
          if (status >= 300 && status < 400) {
            return Effect.fail(new SinkError({
              message: `POST ${shown}: ${status} redirect${location === null ? "" : ` to ${Redact.url(new URL(location, target).toString())}`}: ` +
                `redirects are not followed (a redirected POST can become a GET, and the batch would be counted as delivered); ` +
                `set --sink to the URL that answers the POST itself`
            }))
          }
          return Effect.fail(new Attempt(`POST ${shown}: ${answer}`, status >= 400 && status < 500 && !later.has(status)))
        })
      )

    /** Sends `lines` until accepted; a final refusal is the policy's business. */
    const send = (lines: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        let attempts = 0
        const body = `${lines.join("\n")}\n`
        yield* Effect.andThen(fence.assertFresh, post(body)).pipe(
          Effect.tapError((e) =>
            e instanceof Attempt && !e.final
              ? Effect.suspend(() => ++attempts % 5 === 1 ? Effect.logWarning(`http sink: ${e.message}; retrying (attempt ${attempts})`) : Effect.void)
              : Effect.void
          ),
          Effect.retry({ schedule, while: (e) => e instanceof Attempt && !e.final }),
          Effect.catchIf((e): e is Attempt => e instanceof Attempt, (e) => {
            if ((options.onRejected ?? "fail") === "fail") {
              return Effect.fail(new SinkError({ message: `${e.message}: the endpoint refused a batch of ${lines.length} line(s), and sending it again cannot help. Fix the endpoint or the data and restart (the changes stay in the slot), or run with --on-sink-rejected skip to drop such batches` }))
            }
            const first = lines[0]?.match(/"commit_lsn":"([^"]+)"/)?.[1]
            const last = lines.at(-1)?.match(/"commit_lsn":"([^"]+)"/)?.[1]
            return Effect.logError(`http sink: ${e.message}; skipped a batch of ${lines.length} line(s) (commit_lsn ${first ?? "?"} to ${last ?? "?"}) by policy skip`)
          })
        )
      })

    const flush = Effect.suspend(() => {
      if (buffer.length === 0) return Effect.void
      const lines = buffer
      buffer = []
      bytes = 0
      return send(lines)
    })

    return {
      write: (lines) =>
        Effect.suspend(() => {
          for (const line of lines) {
            buffer.push(line)
            bytes += line.length + 1
          }
          return buffer.length >= maxLines || bytes >= maxBytes ? flush : Effect.void
        }),
      commit: flush
    }
  }

  return { open, requests: () => requests }
}
