/**
 * `slotkeeper check`: preflight of a server for a stream (`Preflight`): wal_level, slot and wal sender headroom,
 * privileges, the configured tables' replica identity, failover readiness (17+). Each failure is printed with its
 * fix; the exit code is 0 only if nothing failed (1 otherwise, 2 for invalid options). Reads only.
 */
import { ConnectFailure, Connector, Preflight, ReplicationReach, SchemaTables, StreamId } from "@slotkeeper/core"
import { Console, Effect, Option, Redacted } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import { runFlags } from "./run.ts"

export const check = Command.make("check", {
  databaseUrl: runFlags.databaseUrl,
  replicationUrl: runFlags.replicationUrl,
  streamId: RunOptions.flagWithDefault("streamId"),
  schema: RunOptions.flagWithDefault("schema"),
  tables: runFlags.tables,
  publish: runFlags.publish,
  publishGeneratedColumns: runFlags.publishGeneratedColumns,
  lock: runFlags.lock,
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the checks as JSON"), Flag.withDefault(false))
}, Effect.fn("slotkeeper.check")(function*(flags) {
  const url = yield* Database.requiredUrl(flags.databaseUrl)
  const config = yield* Effect.fromResult(RunConfig.make({ databaseUrl: url, streamId: flags.streamId, tables: flags.tables, publish: Option.getOrUndefined(flags.publish), publishGeneratedColumns: Option.getOrUndefined(flags.publishGeneratedColumns), lock: Option.getOrUndefined(flags.lock), instanceId: "check" }))
  const schema = yield* Effect.fromResult(RunConfig.checkSchema(flags.schema))
  const identity = StreamId.identity("", config.streamId)
  const replicationUrl = Option.getOrUndefined(flags.replicationUrl)
  if (replicationUrl !== undefined) {
    const bad = RunConfig.checkDatabaseUrl(replicationUrl, "replication-url")
    if (bad !== undefined) return yield* bad
  }
  const shown = Connector.shown(url)
  // a connection the server refuses for good (password, role, database, privilege, pg_hba.conf, TLS) is bad input:
  // exit 2 with the fix; one that may pass (refused, timed out, starting up) is a failed check
  const connecting = (option: string, e: unknown): Effect.Effect<ReadonlyArray<Preflight.Check>, RunConfig.ConfigInvalid> => {
    const c = ConnectFailure.classify(e)
    return c.permanent
      ? Effect.fail(new RunConfig.ConfigInvalid({ option, message: `--${option}: ${ConnectFailure.describe(c)}` }))
      : Effect.succeed([{ name: "connect", level: "error", message: `cannot connect to ${shown}: ${c.message}; check the URL and that the server accepts connections` }] as ReadonlyArray<Preflight.Check>)
  }
  const checks: ReadonlyArray<Preflight.Check> = yield* Effect.gen(function*() {
    const sql = yield* Database.client(url, `slotkeeper:${config.streamId}:check:admin`)
    const [tls] = yield* sql.unsafe<{ ssl: boolean | null; version: string | null }>("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    const connection: Preflight.Check = {
      name: "connection",
      level: "ok",
      message: `${shown}: ${tls?.ssl === true ? `encrypted (${tls.version})` : "not encrypted"}`
    }
    // the replication connection: the role may replicate, pg_hba.conf and anything between let it in, and it reaches
    // the same server
    const replication = yield* ReplicationReach.sameServer(sql, undefined, Redacted.make(replicationUrl ?? url), `slotkeeper:${config.streamId}:check:repl`).pipe(
      Effect.map((r): Preflight.Check => ({
        name: "replication connection",
        level: "ok",
        message: `${replicationUrl === undefined ? "the database URL" : Connector.shown(replicationUrl)} streams from the same server: ${r.encrypted ? `encrypted (${r.tls})` : "not encrypted"}`
      })),
      Effect.catch((e): Effect.Effect<Preflight.Check, RunConfig.ConfigInvalid | ConnectFailure.ConnectFailed> =>
        e._tag === "Replication"
          // listed with its fix, like every other check (a role without REPLICATION is also the role check's)
          ? Effect.succeed<Preflight.Check>({ name: "replication connection", level: "error", message: `cannot open a replication connection: ${ConnectFailure.describe(ConnectFailure.classify(e.cause))}` })
          : e._tag === "Different"
          ? Effect.succeed<Preflight.Check>({ name: "replication connection", level: "error", message: `--replication-url reaches another server than --database-url (${e.message}): point both at the same primary` })
          : Effect.fail(new ConnectFailure.ConnectFailed({ message: ConnectFailure.classify(e.cause).message, permanent: false, reason: "Other" }))
      )
    )
    // the stream's current slot, when slotkeeper's catalog knows it
    const [slot] = yield* sql.unsafe<{ slot_name: string }>(
      `SELECT slot_name FROM ${schema}.slots WHERE stream_id = $1 AND state = 'active' AND to_regclass('${schema}.slots') IS NOT NULL`,
      [config.streamId]
    ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ slot_name: string }>))
    const preflight = yield* Preflight.run(sql, { tables: config.tables, publishes: config.publishes, generatedColumns: config.generatedColumns, lock: config.lock, slotName: slot?.slot_name, publication: identity.publicationName })
    // whole schemas: their tables, and those that would be left out (as run leaves them out)
    const schemaChecks: Array<Preflight.Check> = []
    if (config.schemas.length > 0) {
      const found = yield* SchemaTables.list(sql, config.schemas).pipe(Effect.orElseSucceed(() => ({ tables: [], existing: config.schemas })))
      for (const missing of config.schemas.filter((n) => !found.existing.includes(n))) {
        schemaChecks.push({ name: `schema ${missing}`, level: "error", message: "does not exist (names are exact: as PostgreSQL lists it in \\dn)" })
      }
      const expanded = SchemaTables.expand(found.tables, { publishes: config.publishes, explicit: new Set(config.tables.map((t) => `${t.schema}.${t.name}`)) })
      for (const n of config.schemas.filter((n) => found.existing.includes(n))) {
        const tables = expanded.subscriptions.filter((x) => x.table.schema === n).map((x) => x.table.name)
        schemaChecks.push({ name: `schema ${n}`, level: "ok", message: tables.length === 0 ? "no table to publish yet (tables created later are picked up)" : `publishes ${tables.join(", ")}` })
      }
      for (const t of expanded.skipped) schemaChecks.push({ name: `table ${t.schema}.${t.name}`, level: "warn", message: `left out of the publication: ${t.message}` })
    }
    return [connection, replication, ...preflight, ...schemaChecks]
  }).pipe(
    Effect.catch((e) => (e instanceof RunConfig.ConfigInvalid ? Effect.fail(e) : connecting("database-url", e)))
  )
  if (flags.json) yield* Console.log(JSON.stringify({ ok: checks.every((c) => c.level !== "error"), checks }, null, 2))
  else {
    for (const c of checks) yield* Console.log(`${{ ok: "ok   ", info: "info ", warn: "WARN ", error: "FAIL " }[c.level]} ${c.name}: ${c.message}`)
  }
  if (checks.some((c) => c.level === "error")) {
    yield* Console.error(`slotkeeper check: ${checks.filter((c) => c.level === "error").length} check(s) failed`)
    yield* Effect.sync(() => process.exit(1))
  }
}, Effect.scoped)).pipe(
  Command.withDescription("Check that a server can carry the stream (wal_level, slots, wal senders, privileges, tables, failover); exit 0 only if all pass")
)
