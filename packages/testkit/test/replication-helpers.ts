/**
 * Reads pgoutput changes from a slot over the replication protocol with pg-logical-replication, as the library
 * will. Test helper: collects the first `count` insert messages, then stops the walsender connection.
 */
import { Effect } from "effect"
import { LogicalReplicationService, type Pgoutput, PgoutputPlugin } from "pg-logical-replication"

export const readInserts = (url: string, slot: string, publication: string, count: number) =>
  Effect.callback<Array<Record<string, unknown>>, Error>((resume) => {
    const service = new LogicalReplicationService(
      { connectionString: url },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } }
    )
    const rows: Array<Record<string, unknown>> = []
    let settled = false
    const settle = (effect: Effect.Effect<Array<Record<string, unknown>>, Error>) => {
      if (settled) return
      settled = true
      void service.destroy().finally(() => resume(effect))
    }
    service.on("data", (_lsn: string, message: Pgoutput.Message) => {
      if (message.tag === "insert") {
        rows.push(message.new)
        if (rows.length >= count) settle(Effect.succeed(rows))
      }
    })
    service.on("error", (e: Error) => settle(Effect.fail(e)))
    service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [publication] }), slot).then(
      () => settle(Effect.fail(new Error(`replication ended after ${rows.length} of ${count} inserts`))),
      (e: unknown) => settle(Effect.fail(e instanceof Error ? e : new Error(String(e))))
    )
    return Effect.promise(() => service.destroy())
  })
