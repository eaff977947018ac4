/**
 * `slotkeeper backfill --table T [--where W]`: asks the stream's owner to deliver a table's existing rows (matching
 * `W`) as `read` lines, alongside the stream (see `@slotkeeper/core`'s `Backfill`). The request is checked first, on
 * the server, as the owner will read it — a table missing, not in the stream's publication or without a usable key,
 * or a `where` PostgreSQL refuses, is exit 2 with what to change, and nothing is recorded. Then it is recorded
 * (`BackfillProgress.request`: one running backfill per table) and its id printed; the owner (`slotkeeper run`) picks
 * it up within a second, and `status` shows its progress. `--list` shows the stream's backfills.
 *
 * On a terminal it then follows the backfill with a progress line (rows of PostgreSQL's estimate, rate, time left:
 * `BackfillFollow`) until it is done; Ctrl-C stops following, not the backfill. `--detach` returns at once; `--wait`
 * follows off a terminal too (for scripts: one line at the end, exit 1 when the backfill was cancelled).
 */
import { BackfillProgress, ChunkReader, StreamId } from "@slotkeeper/core"
import { Console, Data, Effect, Option, Schedule } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import * as BackfillFollow from "./BackfillFollow.ts"
import { runFlags } from "./run.ts"

/** A followed backfill ended without being done (cancelled, or its record removed): exit 1. */
export class BackfillCancelled extends Data.TaggedError("BackfillCancelled")<{ readonly message: string }> {}

/** The backfill's row and PostgreSQL's estimate of its table's size; `undefined` when it is gone. */
const sampleOf = (sql: SqlClient, schema: string, id: string) =>
  Effect.map(
    sql.unsafe<{ rows: string; state: string; message: string | null; estimate: string | null }>(
      `SELECT b.rows::text AS rows, b.state, b.message, CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint::text END AS estimate
         FROM ${schema}.backfills b LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(b.schema_name) || '.' || quote_ident(b.table_name))
        WHERE b.backfill_id = $1`,
      [id]
    ),
    ([r]) => (r === undefined ? undefined : { at: performance.now(), rows: Number(r.rows), state: r.state, message: r.message, estimate: r.estimate === null ? null : Number(r.estimate) })
  )

/** Follows backfill `id` until it is no longer running: a live line on a terminal, else the last line only. */
const follow = (sql: SqlClient, schema: string, id: string, table: string, live: boolean) =>
  Effect.gen(function*() {
    const first = yield* sampleOf(sql, schema, id)
    if (first === undefined) return
    let last = first
    const show = (final: boolean) => {
      const text = BackfillFollow.line(table, last.state, BackfillFollow.progress(first, last, last.estimate))
      if (live) process.stdout.write(`\r\x1b[2K${text}${final ? "\n" : ""}`)
      else if (final) process.stdout.write(`${text}\n`)
    }
    show(false)
    yield* Effect.repeat(
      Effect.gen(function*() {
        last = (yield* sampleOf(sql, schema, id)) ?? { ...last, state: "gone" }
        show(last.state !== "running")
      }),
      { schedule: Schedule.spaced("1 second"), while: () => last.state === "running" }
    )
    if (last.state === "cancelled" || last.state === "gone") {
      return yield* new BackfillCancelled({ message: `backfill ${id} of ${table} was ${last.state === "gone" ? "removed" : `cancelled${last.message === null ? "" : `: ${last.message}`}`}` })
    }
  })

export const backfill = Command.make("backfill", {
  databaseUrl: runFlags.databaseUrl,
  streamId: RunOptions.flagWithDefault("streamId"),
  schema: RunOptions.flagWithDefault("schema"),
  table: Flag.String("table").pipe(Flag.withDescription("the table to backfill: schema.table, by PostgreSQL's identifier rules"), Flag.optional),
  where: Flag.String("where").pipe(Flag.withDescription("only its rows matching this SQL condition, e.g. \"created_at > now() - interval '7 days'\""), Flag.optional),
  list: Flag.Boolean("list").pipe(Flag.withDescription("show the stream's backfills instead"), Flag.withDefault(false)),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print as JSON"), Flag.withDefault(false)),
  wait: Flag.Boolean("wait").pipe(Flag.withDescription("follow the backfill until it ends, also off a terminal (exit 1 if it is cancelled)"), Flag.withDefault(false)),
  detach: Flag.Boolean("detach").pipe(Flag.withDescription("on a terminal, return once it is requested instead of following it"), Flag.withDefault(false))
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
  const live = process.stdout.isTTY === true && !flags.json && !flags.detach
  if (flags.json) yield* Console.log(JSON.stringify(requested))
  else yield* Console.log(`backfill ${requested.id} of ${table.schema}.${table.name}: ${requested.rows > 0 ? `running, ${requested.rows} rows so far` : "requested"}; the stream's owner reads it (see slotkeeper backfill --list)${live ? "; Ctrl-C stops following it, not the backfill" : ""}`)
  if (live || flags.wait) yield* follow(sql, flags.schema, requested.id, `${table.schema}.${table.name}`, live)
}, Effect.scoped)).pipe(Command.withDescription("Deliver a table's existing rows (read lines) alongside the stream, or --list the stream's backfills"))
