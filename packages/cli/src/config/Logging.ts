/**
 * Logging: how the CLI logs — always to stderr (stdout carries only data), leveled, as text (default), logfmt or
 * JSON lines for a log pipeline. Set by environment, for every command: `SLOTKEEPER_LOG_FORMAT` (`text`, `logfmt`,
 * `json`) and `SLOTKEEPER_LOG_LEVEL` (`debug`, `info`, `warn`, `error`). A bad value is a `ConfigInvalid`.
 */
import { Redact } from "@slotkeeper/core"
import { Layer, Logger, References, Result } from "effect"
import { ConfigInvalid } from "./RunConfig.ts"

const levels = { debug: "Debug", info: "Info", warn: "Warn", error: "Error" } as const

/** A logger whose messages have URL passwords and secret-looking parameters replaced first (`Redact.text`): a safety net. */
export const redacting = <Output>(logger: Logger.Logger<unknown, Output>): Logger.Logger<unknown, Output> =>
  Logger.make((options) =>
    logger.log({
      ...options,
      message: Array.isArray(options.message)
        ? options.message.map((m) => (typeof m === "string" ? Redact.text(m) : m))
        : typeof options.message === "string" ? Redact.text(options.message) : options.message
    }))

// the console loggers write to stdout whatever LogToStderr says: formatted here, written with console.error
const formats = {
  text: redacting(Logger.defaultLogger),
  logfmt: Logger.withConsoleError(redacting(Logger.formatLogFmt)),
  json: Logger.withConsoleError(redacting(Logger.formatJson))
} as const

/** The logging layer for `env`, or why a setting is not valid. */
export const fromEnv = (env: Record<string, string | undefined>): Result.Result<Layer.Layer<never>, ConfigInvalid> => {
  const format = env.SLOTKEEPER_LOG_FORMAT ?? "text"
  const level = env.SLOTKEEPER_LOG_LEVEL ?? "info"
  if (!(format in formats)) {
    return Result.fail(new ConfigInvalid({ option: "SLOTKEEPER_LOG_FORMAT", message: `SLOTKEEPER_LOG_FORMAT: ${JSON.stringify(format)}: use text, logfmt or json` }))
  }
  if (!(level in levels)) {
    return Result.fail(new ConfigInvalid({ option: "SLOTKEEPER_LOG_LEVEL", message: `SLOTKEEPER_LOG_LEVEL: ${JSON.stringify(level)}: use debug, info, warn or error` }))
  }
  const logger = formats[format as keyof typeof formats]
  return Result.succeed(Layer.mergeAll(
    Layer.succeed(Logger.LogToStderr, true),
    Layer.succeed(References.MinimumLogLevel, levels[level as keyof typeof levels]),
    Logger.layer([logger])
  ))
}
