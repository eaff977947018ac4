/**
 * The `slotkeeper` command line.
 *
 * `run` owns a stream and writes its changes; `check` is a server's preflight; `embedded` starts the embedded default
 * database; `status` shows who owns each stream and how its slots are; `slots list|drop` cleans up stale slots;
 * `backfill` asks the owner for a table's existing rows. Every option also reads an environment variable, named in `--help`.
 *
 * Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 2 for invalid options or input (one line that names the
 * option, printed before any database is touched), 1 for a fatal runtime condition, with its explanation. Logs go to
 * stderr (`Logging`: text, logfmt or JSON); stdout carries only data. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, metrics,
 * traces and logs are also exported over OTLP (`Telemetry`).
 */
// the modules themselves, not the package's index, which loads every module (its Redis client among them) at start-up
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { ConnectFailure, Redact } from "@slotkeeper/core"
import { CliOutput, Command } from "effect/cli"
import { Cause, Console, Effect, Exit, Layer, Option, Runtime } from "effect"
import packageJson from "../package.json" with { type: "json" }
import { backfill } from "./commands/backfill.ts"
import { embedded } from "./commands/embedded.ts"
import { fleet } from "./commands/fleet.ts"
import { check } from "./commands/check.ts"
import { run } from "./commands/run.ts"
import { slots } from "./commands/slots.ts"
import { status } from "./commands/status.ts"
import * as Logging from "./config/Logging.ts"
import * as Telemetry from "./config/Telemetry.ts"

export const version: string = packageJson.version

export const slotkeeper = Command.make("slotkeeper").pipe(
  Command.withDescription(
    "Exclusive, fenced ownership of a PostgreSQL logical replication stream, shared safely by many instances."
  ),
  Command.withSubcommands([run, status, check, slots, backfill, fleet, embedded])
)

/**
 * A fatal cause in one line: a typed error's tag and message (its own explanation), or for a defect (a bug) its
 * message — the stack goes to the log at debug level, never to the last line — then the exit code.
 */
const fatal = (cause: Cause.Cause<unknown>): string => {
  const typed = Cause.findErrorOption(cause)
  if (Option.isSome(typed)) {
    const e = typed.value as { readonly _tag?: string; readonly reason?: string; readonly message?: string }
    return `${[e._tag, e.reason].filter((x) => x !== undefined).join("/")}: ${e.message ?? String(typed.value)} (exit 1)`
  }
  const defect = Cause.squash(cause)
  const message = defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect)
  return `internal error: ${message.split("\n")[0]} (exit 1; a bug: SLOTKEEPER_LOG_LEVEL=debug shows where)`
}

/**
 * Usage errors on stderr, stdout keeping only data: an unknown or bad flag is one line naming it, with a hint to
 * `--help`; help shown because no command was given goes to stderr too. Asked-for help and `--version` stay on stdout.
 */
const presenter = CliOutput.layerPresenter({
  present: (event) => {
    if (event._tag === "InvalidInvocation") {
      const what = event.errors.map((e) =>
        e._tag === "UnrecognizedOption"
          ? `unknown flag ${e.option}${e.suggestions.length > 0 ? ` (did you mean ${e.suggestions.join(" or ")}?)` : ""}`
          : e.message.split("\n").map((l) => l.trim()).filter((l) => l.length > 0).join(" ")
      ).join("; ")
      return Console.error(`slotkeeper: ${Redact.text(what)} (see: ${event.commandPath.join(" ")} --help)`)
    }
    if (event._tag === "Help" && event.reason === "Implicit") {
      return Effect.gen(function*() {
        const formatter = yield* CliOutput.Formatter
        yield* Console.error(formatter.formatHelpDoc(event.helpDoc))
      })
    }
    return CliOutput.defaultPresenter.present(event)
  }
})

/**
 * Runs the command line with `process.argv` until it ends, then exits the process with its code (see the exit codes
 * above). The `slotkeeper` binary calls it; importing this module runs nothing.
 */
export const main = (): void => {
  const program = Effect.gen(function*() {
    const logging = yield* Effect.fromResult(Logging.fromEnv(process.env))
    const telemetry = yield* Effect.fromResult(Telemetry.fromEnv(process.env, version))
    // the exporters over the console loggers: the OTLP logger joins them, and every one of them redacts
    return yield* slotkeeper.pipe(Command.run({ version }), Effect.provide(telemetry.pipe(Layer.provideMerge(logging))))
  })
  program.pipe(
    Effect.catchTag("ConfigInvalid", (e) => Effect.andThen(Console.error(`slotkeeper: ${Redact.text(e.message)}`), Effect.sync(() => process.exit(2)))),
    // a server that refuses the connection for good (a wrong password, a missing database or role, TLS that does not
    // verify, ...) is bad input too: said with what to change, exit 2 (one that may pass is retried where it happens)
    Effect.catchIf(
      (e) => typeof e === "object" && e !== null && ConnectFailure.classify(e).permanent,
      (e) => Effect.andThen(Console.error(`slotkeeper: ${Redact.text(ConnectFailure.describe(ConnectFailure.classify(e)))}`), Effect.sync(() => process.exit(2)))
    ),
    // a usage error (said by the presenter above): exit 2, like every other bad input
    Effect.catchTag("ShowHelp", () => Effect.sync(() => process.exit(2))),
    // a fatal condition: said on stderr (never stdout, which carries data) as the error's own message, then exit 1
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.andThen(
        // where it came from, for a bug report: only when asked for (the last line stays the one-line explanation)
        process.env.SLOTKEEPER_LOG_LEVEL === "debug" ? Console.error(Redact.text(Cause.pretty(cause))) : Effect.void,
        Console.error(`slotkeeper: ${Redact.text(fatal(cause))}`)
      )),
    Effect.provide([NodeServices.layer, presenter]),
    // SIGTERM/SIGINT interrupt the command, which drains and releases ownership: that is a graceful stop, exit 0
    NodeRuntime.runMain({
      disableErrorReporting: true,
      teardown: (exit, onExit) => (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit))
    })
  )
}
