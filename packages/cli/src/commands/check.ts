/**
 * `slotkeeper check`: preflight of a server for a stream (`Preflight`): wal_level, slot and wal sender headroom,
 * privileges, the configured tables' replica identity, failover readiness (17+). Each failure is printed with its
 * fix; the exit code is 0 only if nothing failed (1 otherwise, 2 for invalid options). Reads only.
 */
import { Preflight, Redact, StreamId } from "@slotkeeper/core"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import { runFlags } from "./run.ts"

export const check = Command.make("check", {
  databaseUrl: runFlags.databaseUrl,
  streamId: RunOptions.flagWithDefault("streamId"),
  schema: RunOptions.flagWithDefault("schema"),
  tables: runFlags.tables,
  lock: runFlags.lock,
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the checks as JSON"), Flag.withDefault(false))
}, Effect.fn("slotkeeper.check")(function*(flags) {
  const url = yield* Database.requiredUrl(flags.databaseUrl)
  const config = yield* Effect.fromResult(RunConfig.make({ databaseUrl: url, streamId: flags.streamId, tables: flags.tables, lock: Option.getOrUndefined(flags.lock), instanceId: "check" }))
  const schema = yield* Effect.fromResult(RunConfig.checkSchema(flags.schema))
  const identity = StreamId.identity("", config.streamId)
  const checks = yield* Effect.gen(function*() {
    const sql = yield* Database.client(url, `slotkeeper:${config.streamId}:check:admin`)
    // the stream's current slot, when slotkeeper's catalog knows it
    const [slot] = yield* sql.unsafe<{ slot_name: string }>(
      `SELECT slot_name FROM ${schema}.slots WHERE stream_id = $1 AND state = 'active' AND to_regclass('${schema}.slots') IS NOT NULL`,
      [config.streamId]
    ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ slot_name: string }>))
    return yield* Preflight.run(sql, { tables: config.tables, lock: config.lock, slotName: slot?.slot_name, publication: identity.publicationName })
  }).pipe(
    Effect.catchCause(() => Effect.succeed([{ name: "connect", level: "error", message: `cannot connect to ${Redact.url(url)}: check the URL and that the server accepts connections` }] as ReadonlyArray<Preflight.Check>))
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
