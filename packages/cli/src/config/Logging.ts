/**
 * Logging: how the CLI logs — always to stderr (stdout carries only data), leveled, as text (default), logfmt or
 * JSON lines for a log pipeline. Set by environment, for every command: `SLOTKEEPER_LOG_FORMAT` (`text`, `logfmt`,
 * `json`) and `SLOTKEEPER_LOG_LEVEL` (`debug`, `info`, `warn`, `error`). A bad value is a `ConfigInvalid`.
 */
import { Layer, Logger, References } from "effect"
import { ConfigInvalid } from "./RunConfig.ts"

const levels = { debug: "Debug", info: "Info", warn: "Warn", error: "Error" } as const
// the console loggers write to stdout whatever LogToStderr says: formatted here, written with console.error
const formats = { text: undefined, logfmt: Logger.withConsoleError(Logger.formatLogFmt), json: Logger.withConsoleError(Logger.formatJson) } as const

/** The logging layer for `env`, or why a setting is not valid. */
export const fromEnv = (env: Record<string, string | undefined>): Layer.Layer<never> | ConfigInvalid => {
  const format = env.SLOTKEEPER_LOG_FORMAT ?? "text"
  const level = env.SLOTKEEPER_LOG_LEVEL ?? "info"
  if (!(format in formats)) {
    return new ConfigInvalid({ option: "SLOTKEEPER_LOG_FORMAT", message: `SLOTKEEPER_LOG_FORMAT: ${JSON.stringify(format)}: use text, logfmt or json` })
  }
  if (!(level in levels)) {
    return new ConfigInvalid({ option: "SLOTKEEPER_LOG_LEVEL", message: `SLOTKEEPER_LOG_LEVEL: ${JSON.stringify(level)}: use debug, info, warn or error` })
  }
  const logger = formats[format as keyof typeof formats]
  return Layer.mergeAll(
    Layer.succeed(Logger.LogToStderr, true),
    Layer.succeed(References.MinimumLogLevel, levels[level as keyof typeof levels]),
    logger === undefined ? Layer.empty : Logger.layer([logger])
  )
}
