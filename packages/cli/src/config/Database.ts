/**
 * Database: the server a read-only command (`status`, `check`, `slots`) talks to — its URL required and checked
 * before anything connects, and one short-lived pool tagged with the command's `application_name`.
 */
import { PgClient } from "@effect/sql-pg"
import { ConnectionSpec, Connector, SessionSettings } from "@slotkeeper/core"
import { Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import { checkDatabaseUrl, ConfigInvalid } from "./RunConfig.ts"

/** The `--database-url` (or `DATABASE_URL`) of a command that has no embedded default. */
export const requiredUrl = (databaseUrl: Option.Option<string>): Effect.Effect<string, ConfigInvalid> => {
  // libpq's environment alone may name the server (PGHOST, with PGPORT, PGUSER, PGPASSWORD, ...)
  const url = Option.getOrUndefined(databaseUrl) ?? (process.env.PGHOST !== undefined && process.env.PGHOST !== "" ? "" : undefined)
  if (url === undefined) return Effect.fail(new ConfigInvalid({ option: "database-url", message: "--database-url: name the server (or set DATABASE_URL, or PGHOST and the other PG* variables)" }))
  const bad = checkDatabaseUrl(url)
  return bad === undefined ? Effect.succeed(url) : Effect.fail(bad)
}

/** A pool on `url` for the life of the scope. */
export const client = (url: string, applicationName: string): Effect.Effect<SqlClient.SqlClient, SqlError | Connector.ConnectFailed | ConnectionSpec.ConnectionSpecInvalid, Scope.Scope> =>
  Effect.gen(function*() {
    const target = yield* Connector.sqlPg(Redacted.make(url), 5000)
    const context = yield* Layer.build(PgClient.layer({ connectTimeout: "5 seconds", ...target, applicationName, startupParameters: SessionSettings.startupParameters }))
    return Context.get(context, SqlClient.SqlClient)
  })
