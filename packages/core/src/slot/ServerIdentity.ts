/**
 * ServerIdentity: which cluster and timeline a server is, from the replication protocol — what the resume check
 * compares the durable position's identity with.
 *
 * `IDENTIFY_SYSTEM` gives the system identifier and the *current* timeline (right after a promotion too; the
 * control file's checkpoint timeline lags until the next checkpoint). `TIMELINE_HISTORY <tli>` gives, for every
 * earlier timeline, the LSN where it ended (its switch point). Both need a replication connection
 * (`replication=database`), which speaks the simple query protocol only; nothing from a user is sent on it.
 */
import { Effect, type Redacted, type Scope } from "effect"
import pg from "pg"
import * as ConnectFailure from "../connection/ConnectFailure.ts"
import type { ConnectionSpecInvalid } from "../connection/ConnectionSpec.ts"
import * as Connector from "../connection/Connector.ts"
import * as Lsn from "../Lsn.ts"
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

/**
 * A replication connection (`replication=database`) to `url`, for the life of the scope, made by libpq's rules
 * (`Connector`). A failure to open it is a `ConnectFailed` saying whether it may pass (`ConnectFailure`).
 */
export const connect = (url: Redacted.Redacted, applicationName: string, timeoutMs = 10_000): Effect.Effect<pg.Client, Connector.ConnectFailed | ConnectionSpecInvalid, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.flatMap(Connector.nodePg(url, applicationName, timeoutMs), (config) =>
      Effect.tryPromise({
        try: async () => {
          // `replication` is a startup parameter pg passes through (pg-logical-replication relies on it); @types/pg
          // does not declare it.
          const client = new pg.Client({ ...config, replication: "database" } as pg.ClientConfig)
          client.on("error", () => {}) // a dropped connection fails the pending query; no unhandled 'error' event
          try {
            await client.connect()
          } catch (e) {
            await client.end().catch(() => undefined)
            throw e
          }
          return client
        },
        catch: (e) => {
          const c = ConnectFailure.classify(e)
          return new Connector.ConnectFailed({ message: `replication connection: ${ConnectFailure.describe(c)}`, permanent: c.permanent, reason: c.reason })
        }
      })),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )

/** The server a replication connection to `url` reaches: identity, timeline history and WAL position. */
export const read = (url: Redacted.Redacted, applicationName: string): Effect.Effect<ServerIdentity, SlotError | Connector.ConnectFailed | ConnectionSpecInvalid> =>
  Effect.scoped(Effect.flatMap(connect(url, applicationName), (client) =>
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
    })))
