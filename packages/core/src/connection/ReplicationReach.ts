/**
 * ReplicationReach: the replication connection, tried before it is needed — the role may replicate, `pg_hba.conf`
 * lets it in, nothing between refuses the protocol (a transaction pooler), and it reaches the very server the SQL
 * connection does (`ServerInstance.same`: system identifier, timeline, start). `StreamOwnership` runs it before an
 * instance competes for a stream, `slotkeeper check` to report it; `ReplicationStream` compares the server again at
 * every connection.
 *
 * **Details**: on a replication connection (`replication=database`) SQL runs too, which is how the walsender's own
 * encryption is read (`pg_stat_ssl`).
 */
import { Effect, type Redacted } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as ServerInstance from "../ownership/ServerInstance.ts"
import * as ServerIdentity from "../slot/ServerIdentity.ts"

export type SameServerError =
  /** The SQL connection failed (the cause is the driver's error). */
  | { readonly _tag: "Sql"; readonly cause: unknown }
  /** The replication connection failed (a `ConnectFailed`, a `ConnectionSpecInvalid`, or the driver's error). */
  | { readonly _tag: "Replication"; readonly cause: unknown }
  /** They reach different servers; `clusters`: different system identifiers (another cluster, never a failover). */
  | { readonly _tag: "Different"; readonly clusters: boolean; readonly message: string }

export interface Reached {
  readonly server: ServerInstance.ServerInstance
  /** Whether the replication connection (the walsender) is encrypted, by the server's account. */
  readonly encrypted: boolean
  readonly tls: string | undefined
}

/**
 * A replication connection to `url` opens, and reaches the server `sql` is on. `systemIdReadable`: whether this role
 * may read the system identifier over SQL (`ServerInstance.canReadSystemId`; asked when not given).
 */
export const sameServer = (sql: SqlClient, systemIdReadable: boolean | undefined, url: Redacted.Redacted, applicationName: string): Effect.Effect<Reached, SameServerError> =>
  Effect.gen(function*() {
    if (systemIdReadable === undefined) {
      systemIdReadable = yield* ServerInstance.canReadSystemId(sql).pipe(Effect.mapError((cause): SameServerError => ({ _tag: "Sql", cause })))
    }
    const viaSql = yield* ServerInstance.read(sql, systemIdReadable).pipe(Effect.mapError((cause): SameServerError => ({ _tag: "Sql", cause })))
    const reached = yield* Effect.scoped(Effect.flatMap(
      ServerIdentity.connect(url, applicationName),
      (client) =>
        Effect.tryPromise({
          try: async () => {
            const server = await ServerIdentity.identify(client)
            const tls = await client.query<{ ssl: boolean | null; version: string | null }>("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return { server, encrypted: tls.rows[0]?.ssl === true, tls: tls.rows[0]?.version ?? undefined }
          },
          catch: (cause) => cause
        })
    )).pipe(Effect.mapError((cause): SameServerError => ({ _tag: "Replication", cause })))
    if (!ServerInstance.same(viaSql, reached.server)) {
      const clusters = viaSql.systemId !== undefined && reached.server.systemId !== undefined && viaSql.systemId !== reached.server.systemId
      return yield* Effect.fail<SameServerError>({
        _tag: "Different",
        clusters,
        message: `database URL: ${ServerInstance.describe(viaSql)}; replication URL: ${ServerInstance.describe(reached.server)}`
      })
    }
    return { server: reached.server, encrypted: reached.encrypted, tls: reached.tls }
  })
