/**
 * The http sink against a real HTTP server in the test process (node:http): what it sends, when `commit` returns,
 * what it retries, and the policy for a refusal that retrying cannot fix.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { OwnershipLost } from "../src/index.ts"
import { Effect, Exit, Fiber, Logger } from "effect"
import * as HttpSink from "../src/sink/HttpSink.ts"
import type { Fence } from "../src/sink/Sink.ts"

interface Received {
  readonly body: string
  readonly headers: IncomingMessage["headers"]
}

/** An endpoint answering each request with the next of `answers` (then 200), recording every request. */
const endpoint = (answers: Array<number | "hold" | { readonly status: number; readonly location: string }>) =>
  Effect.acquireRelease(
    Effect.callback<{ url: string; received: Array<Received>; held: Array<ServerResponse>; close: () => void }>((resume) => {
      const received: Array<Received> = []
      const held: Array<ServerResponse> = []
      const server = createServer((req, res) => {
        let body = ""
        req.on("data", (d: Buffer) => (body += d.toString()))
        req.on("end", () => {
          received.push({ body, headers: req.headers })
          const answer = answers.shift() ?? 200
          if (answer === "hold") held.push(res)
          else if (typeof answer === "object") res.writeHead(answer.status, { location: answer.location }).end()
          else res.writeHead(answer).end(answer >= 400 ? `answer ${answer}` : "")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as { port: number }).port
        resume(Effect.succeed({ url: `http://127.0.0.1:${port}/changes`, received, held, close: () => server.close() }))
      })
    }),
    (e) => Effect.sync(() => {
      for (const res of e.held) res.destroy()
      e.close()
    })
  )

const line = (lsn: string, seq: number) => JSON.stringify({ type: "change", commit_lsn: lsn, seq, new: { id: seq } })
const fast = { retryBase: "5 millis", retryCap: "20 millis" } as const

/** A fence whose ownership is fresh (or not): what a holding period gives the sink. */
const fence = (streamId: string, epoch = 1, fresh: () => boolean = () => true): Fence => ({
  streamId,
  epoch,
  assertFresh: Effect.suspend(() => (fresh() ? Effect.void : Effect.fail(new OwnershipLost({ streamId, epoch, message: "fake: past the deadline" }))))
})

/** An http sink opened for one connection of stream `streamId` at `epoch`. */
const open = (options: HttpSink.HttpSinkOptions, streamId = "s", epoch = 1) => {
  const made = HttpSink.make(options)
  return { ...made.open(fence(streamId, epoch)), requests: made.requests }
}

describe("HttpSink (a real HTTP server in the test process)", () => {
  it.live("lines are buffered until commit, then POSTed as one NDJSON batch; commit returns only after the 2xx", () =>
    Effect.gen(function*() {
      const e = yield* endpoint(["hold"])
      const sink = open({ url: e.url, ...fast }, "orders", 7)
      yield* sink.write([line("0/10", 1), line("0/10", 2)], true)
      assert.strictEqual(e.received.length, 0) // nothing sent before the commit
      const commit = yield* Effect.forkChild(sink.commit, { startImmediately: true })
      while (e.received.length === 0) yield* Effect.sleep("5 millis")
      yield* Effect.sleep("100 millis")
      assert.isUndefined(commit.pollUnsafe(), "commit returned before the endpoint answered")
      e.held[0]!.writeHead(204).end()
      yield* Fiber.join(commit)
      assert.strictEqual(e.received[0]!.body, `${line("0/10", 1)}\n${line("0/10", 2)}\n`)
      assert.strictEqual(e.received[0]!.headers["content-type"], "application/x-ndjson")
      assert.strictEqual(e.received[0]!.headers["slotkeeper-stream"], "orders")
      assert.strictEqual(e.received[0]!.headers["slotkeeper-epoch"], "7")
      yield* sink.commit // nothing buffered: no request
      assert.strictEqual(e.received.length, 1)
    }))

  it.live("5xx, 429 and a refused connection are retried with the same batch until a 2xx", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([503, 429, 500])
      const sink = open({ url: e.url, ...fast })
      yield* sink.write([line("0/20", 1)], true)
      yield* sink.commit.pipe(Effect.provide(Logger.layer([])))
      assert.strictEqual(e.received.length, 4)
      assert.isTrue(e.received.every((r) => r.body === `${line("0/20", 1)}\n`))
      // no server at all (connection refused): retried, not failed, for as long as it takes
      const gone = open({ url: "http://127.0.0.1:1/changes", ...fast })
      yield* gone.write([line("0/30", 1)], true)
      const stuck = yield* gone.commit.pipe(Effect.provide(Logger.layer([])), Effect.timeout("300 millis"), Effect.exit)
      assert.isTrue(Exit.isFailure(stuck)) // the timeout, not a sink error
      assert.isAtLeast(gone.requests(), 3)
    }))

  it.live("a 4xx that retrying cannot fix: policy fail stops with the status and body; policy skip logs it and goes on", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([400, 422])
      const failing = open({ url: e.url, ...fast })
      yield* failing.write([line("0/40", 1)], true)
      const error = yield* Effect.flip(failing.commit)
      assert.strictEqual(error._tag, "SinkError")
      assert.match(error.message, /400 "answer 400".*--on-sink-rejected skip/)
      assert.strictEqual(e.received.length, 1) // not retried
      const logged: Array<string> = []
      const skipping = open({ url: e.url, onRejected: "skip", ...fast })
      yield* skipping.write([line("0/50", 1), line("0/58", 1)], true)
      yield* skipping.commit.pipe(Effect.provide(Logger.layer([Logger.make((o) => void logged.push(String(o.message)))])))
      assert.match(logged.join("\n"), /422 .*skipped a batch of 2 line\(s\) \(commit_lsn 0\/50 to 0\/58\)/)
      yield* skipping.write([line("0/60", 1)], true)
      yield* skipping.commit
      assert.strictEqual(e.received.at(-1)!.body, `${line("0/60", 1)}\n`)
    }))

  it.live("a batch goes out before the commit once it is large; credentials in the URL become Basic auth and are never shown", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([401])
      const url = e.url.replace("http://", "http://ingest:s3cret@")
      const sink = open({ url, maxBatchLines: 3, ...fast })
      yield* sink.write([line("0/70", 1), line("0/70", 2)], false)
      assert.strictEqual(e.received.length, 0)
      const error = yield* Effect.flip(sink.write([line("0/70", 3)], false))
      assert.strictEqual(e.received.length, 1)
      assert.strictEqual(e.received[0]!.headers.authorization, `Basic ${Buffer.from("ingest:s3cret").toString("base64")}`)
      assert.notInclude(error.message, "s3cret")
      assert.include(error.message, "ingest:***@")
    }))

  it.live("409 Conflict (a newer owner wrote there): OwnershipLost at once, never retried, never a success", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([409])
      const sink = open({ url: e.url, ...fast }, "orders", 3)
      yield* sink.write([line("0/80", 1)], true)
      const error = yield* Effect.flip(sink.commit)
      assert.strictEqual(error._tag, "OwnershipLost")
      assert.match(error.message, /409 "answer 409" to epoch 3: a newer owner has written there/)
      assert.strictEqual(e.received.length, 1)
    }))

  it.live("a redirect is not followed (the POST would become a GET and count as delivered): it stops the stream, saying where it pointed", () =>
    Effect.gen(function*() {
      for (const status of [301, 302, 303, 307, 308]) {
        const e = yield* endpoint([{ status, location: "/elsewhere?token=abc" }])
        const sink = open({ url: e.url, ...fast })
        yield* sink.write([line("0/90", 1)], true)
        const error = yield* Effect.flip(sink.commit)
        assert.strictEqual(error._tag, "SinkError")
        assert.match(error.message, new RegExp(`${status} redirect to http://127.0.0.1:\\d+/elsewhere\\?token=\\*\\*\\*: redirects are not followed`))
        assert.deepStrictEqual(e.received.map((r) => r.body), [`${line("0/90", 1)}\n`]) // one POST; no GET to the new place
      }
    }))

  it.live("a sink whose ownership is no longer fresh (a process woken past its deadline) sends nothing", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([])
      let fresh = true
      const made = HttpSink.make({ url: e.url, ...fast })
      const sink = made.open(fence("s", 1, () => fresh))
      yield* sink.write([line("0/A0", 1)], true)
      yield* sink.commit
      fresh = false
      yield* sink.write([line("0/B0", 1)], true)
      const error = yield* Effect.flip(sink.commit)
      assert.strictEqual(error._tag, "OwnershipLost")
      assert.strictEqual(e.received.length, 1)
    }))

  it.live("a batch half sent by one connection is not sent by the next: each connection's sink starts empty", () =>
    Effect.gen(function*() {
      const e = yield* endpoint([])
      const made = HttpSink.make({ url: e.url, ...fast })
      const first = made.open(fence("s", 1))
      yield* first.write([line("0/C0", 1)], false) // the connection ends inside this transaction
      const second = made.open(fence("s", 1))
      yield* second.write([line("0/C0", 1), line("0/C0", 2)], true)
      yield* second.commit
      assert.deepStrictEqual(e.received.map((r) => r.body), [`${line("0/C0", 1)}\n${line("0/C0", 2)}\n`])
    }))
})
