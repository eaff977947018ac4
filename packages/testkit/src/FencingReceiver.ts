/**
 * FencingReceiver: a reference HTTP receiver for `slotkeeper run --sink http://...` that enforces the fencing token —
 * what a sink must do so that a deposed owner can never write after its successor.
 *
 * **The contract it enforces** (see `FencedSink` in `@slotkeeper/core`): every request carries `Slotkeeper-Stream`
 * and `Slotkeeper-Epoch`, and every line its `epoch`. The receiver keeps, per stream, the highest epoch it has
 * accepted. A request with a lower epoch is answered `409 Conflict` and changes nothing: a newer owner has written
 * here. An equal or higher epoch is accepted (and becomes the highest). The check and the write are one step (one
 * event-loop turn here; a transaction with the epoch row locked in a database, as `PgTargetSink` does), so no stale
 * batch can slip between them. A line whose epoch differs from its request's is refused with `400`.
 *
 * It records every request — accepted or refused, with its epoch and when it arrived — for tests and the nemesis to
 * judge: `staleAccepted` counts accepted requests whose epoch was below one accepted before (zero by construction:
 * it checks the receiver itself), `refused` the stale ones it turned away. `answer` lets a test inject failures
 * (5xx, a redirect) before the fence is applied.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Effect, type Scope } from "effect"

export interface Request {
  /** `performance.now()` when the request was complete. */
  readonly at: number
  readonly stream: string
  readonly epoch: number
  readonly status: number
  readonly lines: ReadonlyArray<Record<string, unknown>>
  /** `Slotkeeper-Resumed-From`: the durable position the sending connection resumed from, if given. */
  readonly resumedFrom: string | undefined
}

export interface FencingReceiver {
  readonly url: string
  readonly port: number
  /** Every request, in arrival order. */
  readonly requests: ReadonlyArray<Request>
  /** The lines of accepted requests, in arrival order. */
  readonly accepted: () => ReadonlyArray<Record<string, unknown>>
  /** The highest epoch accepted per stream. */
  readonly highest: ReadonlyMap<string, number>
  /** Accepted requests whose epoch was below one accepted earlier for the stream (must be 0). */
  readonly staleAccepted: () => number
  /** Requests refused with 409 (a deposed owner's, turned away). */
  readonly refused: () => number
}

export interface FencingReceiverOptions {
  /** Default: a free port on 127.0.0.1. */
  readonly port?: number
  /** Answers a request before the fence is applied (return a status to answer it so, `undefined` to go on). */
  readonly answer?: (request: { readonly stream: string; readonly epoch: number; readonly body: string }) => number | undefined
}

const respond = (res: ServerResponse, status: number, text: string) => res.writeHead(status, { "content-type": "text/plain" }).end(text)

/** Starts the receiver; it stops with the scope. */
export const make = (options: FencingReceiverOptions = {}): Effect.Effect<FencingReceiver, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const requests: Array<Request> = []
    const highest = new Map<string, number>()
    const handle = (req: IncomingMessage, res: ServerResponse, body: string) => {
      const stream = req.headers["slotkeeper-stream"]
      const epochHeader = req.headers["slotkeeper-epoch"]
      if (req.method !== "POST" || typeof stream !== "string" || typeof epochHeader !== "string" || !/^\d+$/.test(epochHeader)) {
        return respond(res, 400, "POST NDJSON with Slotkeeper-Stream and Slotkeeper-Epoch headers\n")
      }
      const epoch = Number(epochHeader)
      const injected = options.answer?.({ stream, epoch, body })
      if (injected !== undefined) return respond(res, injected, `injected ${injected}\n`)
      let lines: Array<Record<string, unknown>>
      try {
        lines = body.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as Record<string, unknown>)
      } catch {
        return respond(res, 400, "the body is not NDJSON\n")
      }
      if (lines.some((l) => l.epoch !== epoch)) return respond(res, 400, `every line must carry the request's epoch ${epoch}\n`)
      const at = performance.now()
      const resumed = req.headers["slotkeeper-resumed-from"]
      const resumedFrom = typeof resumed === "string" ? resumed : undefined
      const top = highest.get(stream) ?? 0
      if (epoch < top) {
        requests.push({ at, stream, epoch, status: 409, lines, resumedFrom })
        return respond(res, 409, `stream ${stream}: epoch ${epoch} is older than ${top}, which has written here\n`)
      }
      highest.set(stream, epoch)
      requests.push({ at, stream, epoch, status: 200, lines, resumedFrom })
      respond(res, 200, "")
    }
    const server = createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (d: Buffer) => chunks.push(d))
      req.on("end", () => handle(req, res, Buffer.concat(chunks).toString("utf8")))
    })
    const port = yield* Effect.callback<number, Error>((resume) => {
      server.once("error", (e) => resume(Effect.fail(new Error(`fencing receiver: ${e.message}`))))
      server.listen(options.port ?? 0, "127.0.0.1", () => resume(Effect.succeed((server.address() as { port: number }).port)))
    })
    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
    )
    return {
      url: `http://127.0.0.1:${port}/changes`,
      port,
      requests,
      accepted: () => requests.filter((r) => r.status === 200).flatMap((r) => r.lines),
      highest,
      staleAccepted: () => {
        const seen = new Map<string, number>()
        let stale = 0
        for (const r of requests) {
          if (r.status !== 200) continue
          if (r.epoch < (seen.get(r.stream) ?? 0)) stale++
          seen.set(r.stream, Math.max(r.epoch, seen.get(r.stream) ?? 0))
        }
        return stale
      },
      refused: () => requests.filter((r) => r.status === 409).length
    } satisfies FencingReceiver
  })
