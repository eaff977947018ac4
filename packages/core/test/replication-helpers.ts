/**
 * Test helper: a pgoutput replication connection (pg-logical-replication) that collects inserts, open until its
 * scope closes. Acknowledges nothing (the slot positions are the tests' business).
 */
import { Effect } from "effect"
import type { Client } from "pg"
import { LogicalReplicationService, type Pgoutput, PgoutputPlugin } from "pg-logical-replication"
import * as TemporaryClone from "../src/slot/TemporaryClone.ts"

export interface OpenStream {
  readonly inserts: Array<Record<string, unknown>>
  /** Fails or ends when the replication connection does. */
  readonly ended: Promise<unknown>
  /** What happened so far, for a failure message: messages received, whether and how the connection ended. */
  readonly describe: () => string
}

/**
 * A plugin that streams from a temporary copy of `persistentSlot`, made by `TemporaryClone.copy` — the function
 * `ReplicationStream` runs for every connection in temporary mode — on the replication session itself.
 */
export class CopyingPlugin extends PgoutputPlugin {
  readonly clone = TemporaryClone.cloneName()
  readonly persistentSlot: string
  constructor(options: ConstructorParameters<typeof PgoutputPlugin>[0], persistentSlot: string) {
    super(options)
    this.persistentSlot = persistentSlot
  }
  override async start(client: Client, _slot: string, lastLsn: string): Promise<unknown> {
    await TemporaryClone.copy(client, this.persistentSlot, this.clone)
    return super.start(client, this.clone, lastLsn)
  }
}

export const openStream = (url: string, plugin: PgoutputPlugin, slot: string, applicationName = "slotkeeper-test-repl") =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const service = new LogicalReplicationService(
        { connectionString: url, application_name: applicationName },
        { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } }
      )
      const inserts: Array<Record<string, unknown>> = []
      const seen = { messages: 0, started: false, end: "still open" }
      service.on("start", () => {
        seen.started = true
      })
      service.on("data", (_lsn: string, message: Pgoutput.Message) => {
        seen.messages++
        if (message.tag === "insert") inserts.push(message.new)
      })
      service.on("error", () => {})
      const ended = service.subscribe(plugin, slot)
      ended.then(() => {
        seen.end = "ended"
      }, (e: unknown) => {
        seen.end = `failed: ${e instanceof Error ? e.message : String(e)}`
      })
      const describe = () => `replication ${seen.started ? "started" : "not started"}, ${seen.messages} messages, connection ${seen.end}`
      return { service, stream: { inserts, ended, describe } satisfies OpenStream }
    }),
    ({ service }) => Effect.promise(() => service.destroy())
  ).pipe(Effect.map(({ stream }) => stream))

/** Waits until `stream` has at least `n` inserts (real time). */
export const inserts = (stream: OpenStream, n: number, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (stream.inserts.length < n) {
      if (Date.now() > deadline) {
        return yield* Effect.die(new Error(`only ${stream.inserts.length} of ${n} inserts after ${timeoutMs} ms (${stream.describe()})`))
      }
      yield* Effect.sleep("10 millis")
    }
    return stream.inserts.slice(0, n)
  })
