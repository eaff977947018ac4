/**
 * FaultProxy: a TCP proxy between a client under test and a server, whose behaviour can be switched at any time
 * to model network faults as the application sees them.
 *
 * Modes (they apply to open connections and to new ones):
 * - `pass`: bytes flow both ways, after the added latency if one is set (`setLatency`).
 * - `blackhole`: a half-open partition. Every connection stays open, but nothing is forwarded in either direction —
 *   no bytes, and no close either: a client that closes its socket is not seen closing by the server, and the other
 *   way round. New connections are accepted (the proxy's kernel completes the handshake) and hang. The proxy stops
 *   reading, so held data waits in the kernel's socket buffers and memory stays bounded. Back in `pass`, everything
 *   held is delivered in order, as TCP retransmission would after a partition heals.
 * - `reset`: every open connection is closed abruptly (RST) on both sides, and new connections are reset at once.
 *
 * **What it does not model.** The proxy is a userspace process: its kernel still acknowledges TCP segments and
 * keepalive probes from both peers. It therefore models a hung path or a frozen peer *process*, not a dead host:
 * server-side `tcp_keepalives_*` and `tcp_user_timeout` never fire through it. What it tests is detection at the
 * application level — client heartbeat deadlines, `idle_session_timeout`, `wal_sender_timeout`. Dropping packets
 * at the kernel (netem in a network namespace) is needed for the rest.
 *
 * **A moving address.** `setTarget` points new connections at another server (open ones stay where they are):
 * with `reset` first, it is a virtual IP or a DNS name moved to a promoted standby.
 *
 * To pause a process instead of a path (a GC pause, a frozen VM), see `ProcessControl`.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net"
import { Context, Effect, Layer, Schema, type Scope } from "effect"

export class FaultProxyError extends Schema.TaggedError<FaultProxyError>()("FaultProxyError", {
  message: Schema.String
}) {}

export type Mode = "pass" | "blackhole" | "reset"

export interface FaultProxyOptions {
  readonly targetHost?: string
  readonly targetPort: number
  /** Port to listen on (127.0.0.1); default: a free one. */
  readonly listenPort?: number
}

export interface FaultProxy {
  readonly host: string
  readonly port: number
  readonly mode: Effect.Effect<Mode>
  readonly setMode: (mode: Mode) => Effect.Effect<void>
  /** Delay added to every chunk and close, in each direction, in milliseconds (0 = none). */
  readonly setLatency: (ms: number) => Effect.Effect<void>
  /** New connections go to this port from now on (open ones keep theirs): an address moved to another server. */
  readonly setTarget: (port: number) => Effect.Effect<void>
  readonly targetPort: Effect.Effect<number>
  /** Connections currently open through the proxy (client side accepted and not yet closed). */
  readonly openConnections: Effect.Effect<number>
  /** Connections accepted since the proxy started. */
  readonly acceptedConnections: Effect.Effect<number>
}

type Event = { readonly kind: "data"; readonly chunk: Buffer; readonly due: number } | { readonly kind: "end" | "destroy"; readonly due: number }

/** One direction of one connection: events read from one socket, waiting to be applied to the other. */
class Pipe {
  readonly queue: Array<Event> = []
  timer: NodeJS.Timeout | undefined
  readonly getTo: () => Socket | undefined
  constructor(getTo: () => Socket | undefined) {
    this.getTo = getTo
  }
}

interface Pair {
  readonly client: Socket
  upstream: Socket | undefined
  readonly up: Pipe
  readonly down: Pipe
  done: boolean
}

/** Starts a proxy on 127.0.0.1 to the target; it is closed, with every connection through it, when the scope closes. */
export const make = (options: FaultProxyOptions): Effect.Effect<FaultProxy, FaultProxyError, Scope.Scope> =>
  Effect.gen(function*() {
    const targetHost = options.targetHost ?? "127.0.0.1"
    let mode: Mode = "pass"
    let latency = 0
    let targetPort = options.targetPort
    let accepted = 0
    const pairs = new Set<Pair>()

    const finish = (pair: Pair) => {
      if (pair.done) return
      pair.done = true
      for (const p of [pair.up, pair.down]) clearTimeout(p.timer)
      pair.client.destroy()
      pair.upstream?.destroy()
      pairs.delete(pair)
    }

    const resetPair = (pair: Pair) => {
      pair.client.resetAndDestroy()
      pair.upstream?.resetAndDestroy()
      finish(pair)
    }

    // Apply what is due on one pipe, in order; only in pass mode.
    const drain = (pair: Pair, pipe: Pipe) => {
      clearTimeout(pipe.timer)
      pipe.timer = undefined
      if (mode !== "pass" || pair.done) return
      const to = pipe.getTo()
      if (to === undefined) return
      const now = Date.now()
      while (pipe.queue.length > 0) {
        const event = pipe.queue[0]!
        if (event.due > now) {
          pipe.timer = setTimeout(() => drain(pair, pipe), event.due - now)
          return
        }
        pipe.queue.shift()
        if (event.kind === "data") to.write(event.chunk)
        else if (event.kind === "end") to.end()
        else to.destroySoon() // the peer closed: close this side once what was written to it is flushed
      }
    }

    const push = (pair: Pair, pipe: Pipe, event: Event) => {
      pipe.queue.push(event)
      if (mode === "pass") drain(pair, pipe)
    }

    const wire = (pair: Pair, from: Socket, pipe: Pipe) => {
      from.on("data", (chunk: Buffer) => push(pair, pipe, { kind: "data", chunk, due: Date.now() + latency }))
      from.on("end", () => push(pair, pipe, { kind: "end", due: Date.now() + latency }))
      from.on("close", () => {
        push(pair, pipe, { kind: "destroy", due: Date.now() + latency })
        // the connection is over once both of its sockets are closed
        if (pair.client.closed && (pair.upstream === undefined || pair.upstream.closed)) finish(pair)
      })
      from.on("error", () => {}) // a reset or refused connection shows as 'close' next
    }

    const connectUpstream = (pair: Pair) => {
      if (pair.upstream !== undefined || pair.done) return
      const upstream = createConnection({ host: targetHost, port: targetPort, allowHalfOpen: true })
      pair.upstream = upstream
      upstream.setNoDelay(true)
      wire(pair, upstream, pair.down)
      upstream.on("connect", () => drain(pair, pair.up))
    }

    const applyMode = () => {
      for (const pair of [...pairs]) {
        if (mode === "reset") resetPair(pair)
        else if (mode === "blackhole") {
          pair.client.pause()
          pair.upstream?.pause()
          for (const p of [pair.up, pair.down]) clearTimeout(p.timer)
        } else {
          connectUpstream(pair)
          pair.client.resume()
          pair.upstream?.resume()
          drain(pair, pair.up)
          drain(pair, pair.down)
        }
      }
    }

    const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
      accepted++
      if (mode === "reset") return client.resetAndDestroy()
      client.setNoDelay(true)
      const pair: Pair = {
        client,
        upstream: undefined,
        up: new Pipe(() => pair.upstream),
        down: new Pipe(() => pair.client),
        done: false
      }
      pairs.add(pair)
      wire(pair, client, pair.up)
      if (mode === "pass") {
        connectUpstream(pair)
        client.resume()
      }
    })

    const port = yield* Effect.callback<number, FaultProxyError>((resume) => {
      server.once("error", (e) => resume(Effect.fail(new FaultProxyError({ message: `cannot listen: ${e.message}` }))))
      server.listen(options.listenPort ?? 0, "127.0.0.1", () => {
        const address = server.address()
        resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
      })
    })
    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        for (const pair of [...pairs]) resetPair(pair)
        server.close(() => resume(Effect.void))
      })
    )

    return {
      host: "127.0.0.1",
      port,
      mode: Effect.sync(() => mode),
      setMode: (next: Mode) =>
        Effect.sync(() => {
          mode = next
          applyMode()
        }),
      setLatency: (ms: number) =>
        Effect.sync(() => {
          latency = Math.max(0, ms)
        }),
      setTarget: (port: number) =>
        Effect.sync(() => {
          targetPort = port
        }),
      targetPort: Effect.sync(() => targetPort),
      openConnections: Effect.sync(() => pairs.size),
      acceptedConnections: Effect.sync(() => accepted)
    }
  })

/** A proxy as a service, for tests that need one. */
export class FaultProxyService extends Context.Service<FaultProxyService, FaultProxy>()("@slotkeeper/testkit/FaultProxy") {
  static readonly layer = (options: FaultProxyOptions): Layer.Layer<FaultProxyService, FaultProxyError> =>
    Layer.effect(FaultProxyService, make(options))
}
