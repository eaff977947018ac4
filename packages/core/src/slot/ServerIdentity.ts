/**
 * ServerIdentity: which cluster and timeline a server is, from the replication protocol — what the resume check
 * compares the durable position's identity with.
 *
 * `IDENTIFY_SYSTEM` gives the system identifier and the *current* timeline (right after a promotion too; the
 * control file's checkpoint timeline lags until the next checkpoint). `TIMELINE_HISTORY <tli>` gives, for every
 * earlier timeline, the LSN where it ended (its switch point). Both need a replication connection
 * (`replication=database`), which speaks the simple query protocol only; nothing from a user is sent on it.
 */
import { Effect, Redacted } from "effect"
import pg from "pg"
import * as Lsn from "../Lsn.ts"
import * as SessionSettings from "../SessionSettings.ts"
import type * as ServerInstance from "../ownership/ServerInstance.ts"
import type { ServerIdentity as ResumeIdentity } from "./Resume.ts"
import { SlotError } from "./PersistentSlot.ts"

export interface ServerIdentity extends ResumeIdentity {
  /** The server's current WAL flush position. */
  readonly xlogpos: Lsn.Lsn
  readonly database: string
  /** The running server, as ownership sees it: compared with the one ownership is held on. */
  readonly instance: ServerInstance.ServerInstance
}

/** Parses a timeline history file: `<parent tli>\t<switch point>\t<reason>` per line. */
export const parseHistory = (content: string): Map<number, Lsn.Lsn> => {
  const points = new Map<number, Lsn.Lsn>()
  for (const line of content.split("\n")) {
    const fields = line.trim().split(/\s+/)
    if (fields.length < 2 || fields[0] === undefined || !/^\d+$/.test(fields[0])) continue
    const lsn = Lsn.parse(fields[1] ?? "")
    if (typeof lsn === "bigint") points.set(Number(fields[0]), lsn)
  }
  return points
}

/**
 * `IDENTIFY_SYSTEM` and the postmaster's start on a replication connection (which takes SQL too): the running server
 * it reached. Used on the connection that streams, right before `START_REPLICATION`.
 */
export const identify = async (client: pg.Client): Promise<ServerInstance.ServerInstance & { readonly xlogpos: Lsn.Lsn; readonly database: string }> => {
  const system = await client.query<{ systemid: string; timeline: number; xlogpos: string; dbname: string }>("IDENTIFY_SYSTEM")
  const row = system.rows[0]
  if (row === undefined) throw new Error("IDENTIFY_SYSTEM returned no row")
  const started = await client.query<{ started_at: string }>(
    "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text AS started_at"
  )
  return {
    systemId: String(row.systemid),
    timeline: Number(row.timeline),
    startedAt: String(started.rows[0]?.started_at),
    xlogpos: Lsn.parseUnsafe(row.xlogpos),
    database: row.dbname
  }
}

export const read = (url: Redacted.Redacted, applicationName: string): Effect.Effect<ServerIdentity, SlotError> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: async () => {
        // `replication` is a startup parameter pg passes through (pg-logical-replication relies on it); @types/pg
        // does not declare it.
        const config: pg.ClientConfig & { readonly replication: "database" } = {
          connectionString: SessionSettings.connectionString(Redacted.value(url)),
          replication: "database",
          application_name: applicationName
        }
        const client = new pg.Client(config)
        client.on("error", () => {}) // a dropped connection fails the pending query; no unhandled 'error' event
        await client.connect()
        return client
      },
      catch: (e) => new SlotError({ reason: "Query", message: `replication connection: ${e instanceof Error ? e.message : String(e)}` })
    }),
    (client) =>
      Effect.tryPromise({
        try: async () => {
          const instance = await identify(client)
          let switchPoints = new Map<number, Lsn.Lsn>()
          if (instance.timeline > 1) {
            const history = await client.query<{ content: Buffer | string }>(`TIMELINE_HISTORY ${Math.trunc(instance.timeline)}`)
            const content = history.rows[0]?.content
            switchPoints = parseHistory(Buffer.isBuffer(content) ? content.toString("utf8") : String(content ?? ""))
          }
          return {
            systemId: instance.systemId!,
            timeline: instance.timeline,
            switchPoints,
            xlogpos: instance.xlogpos,
            database: instance.database,
            instance: { systemId: instance.systemId, timeline: instance.timeline, startedAt: instance.startedAt }
          }
        },
        catch: (e) => new SlotError({ reason: "Query", message: `identifying the server: ${e instanceof Error ? e.message : String(e)}` })
      }),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )
