/**
 * `slotkeeper backfill --table T [--where W]`: asks the stream's owner to deliver a table's existing rows (matching
 * `W`) as `read` lines, alongside the stream (see `@slotkeeper/core`'s `Backfill`). The request is checked first, on
 * the server, as the owner will read it — a table missing, not in the stream's publication or without a usable key,
 * or a `where` PostgreSQL refuses, is exit 2 with what to change, and nothing is recorded. Then it is recorded
 * (`BackfillProgress.request`: one running backfill per table) and its id printed; the owner (`slotkeeper run`) picks
 * it up within a second, and `status` shows its progress. `--list` shows the stream's backfills.
 */
import { BackfillProgress, ChunkReader, StreamId } from "@slotkeeper/core"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import { runFlags } from "./run.ts"

export const backfill = Command.make("backfill", {
  databaseUrl: runFlags.databaseUrl,
  streamId: RunOptions.flagWithDefault("streamId"),
  schema: RunOptions.flagWithDefault("schema"),
  table: Flag.String("table").pipe(Flag.withDescription("the table to backfill: schema.table, by PostgreSQL's identifier rules"), Flag.optional),
  where: Flag.String("where").pipe(Flag.withDescription("only its rows matching this SQL condition, e.g. \"created_at > now() - interval '7 days'\""), Flag.optional),
  list: Flag.Boolean("list").pipe(Flag.withDescription("show the stream's backfills instead"), Flag.withDefault(false)),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print as JSON"), Flag.withDefault(false))
}, Effect.fn("slotkeeper.backfill")(function*(flags) {
  const bad = StreamId.validate(flags.streamId)
  if (bad !== undefined) return yield* new RunConfig.ConfigInvalid({ option: "stream-id", message: `--stream-id: ${bad.message}` })
  yield* Effect.fromResult(RunConfig.checkSchema(flags.schema))
  const table = Option.isNone(flags.table) ? undefined : yield* Effect.fromResult(RunConfig.parseTable(flags.table.value))
  if (table === undefined && !flags.list) return yield* new RunConfig.ConfigInvalid({ option: "table", message: "--table: name the table to backfill, e.g. --table public.orders (or --list)" })
  if (table !== undefined && (table.columns !== undefined || table.where !== undefined)) {
    return yield* new RunConfig.ConfigInvalid({ option: "table", message: "--table: a backfill reads the columns the stream publishes; give a condition with --where, not in --table" })
  }
  const url = yield* Database.requiredUrl(flags.databaseUrl)
  const sql = yield* Database.client(url, "slotkeeper:backfill")
  if (flags.list || table === undefined) {
    yield* BackfillProgress.setup(sql, flags.schema)
    const all = yield* BackfillProgress.list(sql, flags.schema, flags.streamId)
    if (flags.json) return yield* Console.log(JSON.stringify({ stream: flags.streamId, backfills: all }, null, 2))
    if (all.length === 0) return yield* Console.log(`stream ${flags.streamId} has no backfills`)
    for (const b of all) {
      yield* Console.log(`${b.id}  ${b.schema}.${b.table}  ${b.state}  ${b.rows} rows in ${b.chunks} chunks${b.where === undefined ? "" : `  where ${b.where}`}${b.message === undefined ? "" : `  (${b.message})`}`)
    }
    return
  }
  const [version] = yield* sql.unsafe<{ v: number }>("SELECT current_setting('server_version_num')::int AS v")
  const where = Option.getOrUndefined(flags.where)
  // checked as the owner will read it: bad input is exit 2, and nothing is recorded
  yield* ChunkReader.describe(sql, {
    publication: StreamId.identity("", flags.streamId).publicationName,
    schema: table.schema,
    table: table.name,
    where,
    serverVersion: version!.v
  }).pipe(Effect.catchTag("BackfillRefused", (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` }))))
  const requested = yield* BackfillProgress.request(sql, flags.schema, flags.streamId, { schema: table.schema, table: table.name, where })
  if (flags.json) return yield* Console.log(JSON.stringify(requested))
  yield* Console.log(`backfill ${requested.id} of ${table.schema}.${table.name}: ${requested.rows > 0 ? `running, ${requested.rows} rows so far` : "requested"}; the stream's owner reads it (see slotkeeper backfill --list)`)
}, Effect.scoped)).pipe(Command.withDescription("Deliver a table's existing rows (read lines) alongside the stream, or --list the stream's backfills"))
