/**
 * Telemetry: OpenTelemetry export of the CLI's metrics, traces and logs over OTLP/HTTP (JSON), by Effect's own
 * exporters (`effect/observability`), switched on by the standard environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (or a
 * signal's `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default
 * `slotkeeper`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BLRP_SCHEDULE_DELAY`,
 * `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_SDK_DISABLED`, `OTEL_<SIGNAL>_EXPORTER=none`.
 *
 * **Details**
 * - Metrics are the same `Metric`s `/metrics` shows (`StreamMetrics`); spans are the commands' and the core's
 *   `Effect.fn` spans; logs are every log line, with the same redaction as the console's (a password in a URL is
 *   replaced before anything leaves the process).
 * - Nothing is exported, and nothing is loaded, when no endpoint is set. Everything buffered is flushed when the
 *   command ends (bounded by the exporters' shutdown timeout).
 *
 * **Gotchas**
 * - An endpoint that does not answer costs retries in the background, never the stream: the exporters drop what they
 *   cannot send.
 */
import { Redact } from "@slotkeeper/core"
import { ConfigProvider, Effect, Layer, Logger, Result } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpLogger, OtlpMetrics, OtlpSerialization, OtlpTracer } from "effect/observability"
import * as Logging from "./Logging.ts"
import { ConfigInvalid } from "./RunConfig.ts"

const endpointVariables = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]

/**
 * Every logger installed so far, with messages redacted first (`Logging.redacting`): the OTLP logger's included (the
 * console's were already, and redacting twice changes nothing).
 */
const redactLoggers = Layer.effect(Logger.CurrentLoggers)(
  Effect.map(Effect.service(Logger.CurrentLoggers), (loggers) => new Set([...loggers].map(Logging.redacting)))
)

/**
 * The export layer for `env` (empty when no endpoint is set), or why an endpoint is not a URL. `version`: the
 * service's version in the resource.
 */
export const fromEnv = (env: Record<string, string | undefined>, version: string): Result.Result<Layer.Layer<never>, ConfigInvalid> => {
  const given = endpointVariables.filter((name) => env[name] !== undefined && env[name] !== "")
  if (given.length === 0) return Result.succeed(Layer.empty)
  for (const name of given) {
    try {
      const url = new URL(env[name]!)
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http")
    } catch {
      return Result.fail(new ConfigInvalid({ option: name, message: `${name}: ${JSON.stringify(Redact.text(env[name]!))} is not an http:// or https:// URL` }))
    }
  }
  const resource = { serviceName: env.OTEL_SERVICE_NAME ?? "slotkeeper", serviceVersion: version }
  const exporters = Layer.mergeAll(
    OtlpMetrics.layerFromConfig({ resource }),
    OtlpTracer.layerFromConfig({ resource }),
    OtlpLogger.layerFromConfig({ resource, mergeWithExisting: true })
  ).pipe(
    Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer]),
    // the exporters read their settings from `env`; each signal's exporter is "otlp" unless set (OpenTelemetry's
    // default, where Effect's is none)
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
      env: {
        ...(env as Record<string, string>),
        OTEL_METRICS_EXPORTER: env.OTEL_METRICS_EXPORTER ?? "otlp",
        OTEL_TRACES_EXPORTER: env.OTEL_TRACES_EXPORTER ?? "otlp",
        OTEL_LOGS_EXPORTER: env.OTEL_LOGS_EXPORTER ?? "otlp"
      }
    })))
  )
  return Result.succeed(redactLoggers.pipe(Layer.provideMerge(exporters), Layer.orDie) as Layer.Layer<never>)
}
