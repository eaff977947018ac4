/**
 * `slotkeeper slots list|drop`: a stream's slots on a server — every incarnation that still exists — and dropping the
 * stale ones, which pin WAL for ever.
 *
 * `drop` acts as the stream's owner (it takes ownership, so its drops are guarded, and gives it back): with no
 * `--slot`, every candidate of `SlotCleanup` (not current, inactive, not temporary, inactive for longer than
 * `--older-than`, or retired/abandoned before 17); with `--slot NAME`, that one — refused when it is the stream's
 * current slot unless `--force` (the stream then fails with `SlotMissing` and needs a resync). When another instance
 * owns the stream, `drop` waits `--wait` for it and then says so instead.
 */
import { Ownership, SlotCleanup, StreamId, StreamOwnership } from "@slotkeeper/core"
import { Console, Effect, Option, Redacted } from "effect"
import { Command, Flag } from "effect/cli"
import { SqlClient } from "effect/sql"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import { runFlags } from "./run.ts"

const common = {
  databaseUrl: runFlags.databaseUrl,
  streamId: RunOptions.flagWithDefault("streamId"),
  schema: RunOptions.flagWithDefault("schema"),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print as JSON"), Flag.withDefault(false)),
  olderThan: Flag.String("older-than").pipe(Flag.withDescription("a stale slot must have been inactive this long (17+), e.g. 1 hour"), Flag.withDefault("1 hour"))
}

const duration = (option: string, text: string) => Effect.suspend(() => Effect.fromResult(RunConfig.parseDuration(option, text, true)))

/** The URL, checked, a valid stream id and schema: before anything connects. */
const checkedUrl = (databaseUrl: Option.Option<string>, streamId: string, schema: string) =>
  Effect.gen(function*() {
    const bad = StreamId.validate(streamId)
    if (bad !== undefined) return yield* new RunConfig.ConfigInvalid({ option: "stream-id", message: `--stream-id: ${bad.message}` })
    yield* Effect.fromResult(RunConfig.checkSchema(schema))
    return yield* Database.requiredUrl(databaseUrl)
  })

const listing = (sql: SqlClient.SqlClient, streamId: string, schema: string, olderThanMs: number) =>
  SlotCleanup.list(sql, { streamId, slotPrefix: StreamId.identity("", streamId).slotPrefix, schema, olderThanMs })

const list = Command.make("list", common, Effect.fn("slotkeeper.slots.list")(function*(flags) {
  const url = yield* checkedUrl(flags.databaseUrl, flags.streamId, flags.schema)
  const sql = yield* Database.client(url, "slotkeeper:slots")
  const { slots } = yield* listing(sql, flags.streamId, flags.schema, yield* duration("older-than", flags.olderThan))
  if (flags.json) return yield* Console.log(JSON.stringify({ stream: flags.streamId, slots }, null, 2))
  if (slots.length === 0) return yield* Console.log(`stream ${flags.streamId} has no slots on this server`)
  for (const s of slots) {
    yield* Console.log(`${s.slotName}  ${s.current ? "current" : "stale  "}  ${s.active ? "streaming" : "idle"}${s.candidate ? "  (may be dropped)" : ""}`)
  }
}, Effect.scoped)).pipe(Command.withDescription("List the stream's slots on the server: current, stale, streaming"))

const drop = Command.make("drop", {
  ...common,
  slot: Flag.String("slot").pipe(Flag.withDescription("drop this slot (default: every stale candidate)"), Flag.optional),
  force: Flag.Boolean("force").pipe(Flag.withDescription("also drop the stream's current slot (the stream then needs a resync)"), Flag.withDefault(false)),
  wait: Flag.String("wait").pipe(Flag.withDescription("how long to wait for ownership of the stream"), Flag.withDefault("10 seconds"))
}, Effect.fn("slotkeeper.slots.drop")(function*(flags) {
  const url = yield* checkedUrl(flags.databaseUrl, flags.streamId, flags.schema)
  const olderThan = yield* duration("older-than", flags.olderThan)
  const wait = yield* duration("wait", flags.wait)
  const stream = yield* StreamOwnership.make({ streamId: flags.streamId, instanceId: "slotkeeper-slots-drop", url: Redacted.make(url), schema: flags.schema })
  let result: ReadonlyArray<string> = [] // what the owned work dropped (supervisor.run returns nothing)
  const owned = Effect.gen(function*() {
    const own = yield* Ownership
    const { candidates, slots } = yield* listing(stream.sql, flags.streamId, flags.schema, olderThan)
    let chosen = candidates
    if (Option.isSome(flags.slot)) {
      const name = flags.slot.value
      const slot = slots.find((s) => s.slotName === name)
      if (slot === undefined) return yield* Effect.fail(`${name} is not a slot of stream ${flags.streamId} on this server`)
      if (slot.current && !flags.force) {
        return yield* Effect.fail(`${name} is the current slot of stream ${flags.streamId}: dropping it loses the stream's position (it would fail with SlotMissing ` +
          `and need a resync). Add --force to do it anyway`)
      }
      chosen = [{ slotName: name, incarnation: Number(/_(\d+)$/.exec(name)?.[1] ?? 0), inactiveMs: undefined, catalogState: undefined }]
    }
    return yield* SlotCleanup.drop(own, stream.sql, flags.schema, chosen)
  })
  const dropped = yield* stream.supervisor.run(Effect.flatMap(owned, (names) => Effect.sync(() => (result = names)))).pipe(
    Effect.timeoutOption(`${wait} millis`),
    Effect.flatMap((o) => (Option.isNone(o) ? Effect.fail(`another instance owns stream ${flags.streamId} and did not let go within ${flags.wait}: stop it, or drop from it`) : Effect.succeed(result))),
    Effect.catch((e) => Effect.andThen(Console.error(`slotkeeper slots drop: ${typeof e === "string" ? e : String((e as { message?: string }).message ?? e)}`), Effect.sync(() => process.exit(1))))
  )
  if (flags.json) return yield* Console.log(JSON.stringify({ stream: flags.streamId, dropped }))
  yield* Console.log(dropped.length === 0 ? "nothing to drop" : `dropped ${dropped.join(", ")}`)
}, Effect.scoped)).pipe(Command.withDescription("Drop the stream's stale slots (or --slot NAME) as the stream's owner"))

export const slots = Command.make("slots").pipe(
  Command.withDescription("List or drop the stream's replication slots"),
  Command.withSubcommands([list, drop])
)
