/**
 * OwnershipConfig: how an instance competes for and holds a stream, and the checks that make its timing safe.
 *
 * Safety needs two bounds to be ordered: the holder must give up (stop writing, interrupt its dependents) *before*
 * anyone else can become the owner. Everything here is validated before anything is touched, and a bad value gets a
 * message that says what to change.
 *
 * **Advisory mode** (default): the server releases the lock of an unreachable holder when its lock session has been
 * idle for `serverReleaseBound` (set as that session's `idle_session_timeout`); the holder heartbeats every
 * `heartbeatInterval` and declares the lock lost when no heartbeat has succeeded for `lossDeadline`, measured from
 * the *start* of the last good heartbeat (the server's idle clock starts at its end, later). Required:
 * `lossDeadline + safetyMargin <= serverReleaseBound`, and `lossDeadline >= 2 * heartbeatInterval` so one slow
 * heartbeat is not a loss.
 *
 * **Lease mode**: the lease is held until `now() + leaseDuration` by the database's clock; another instance may take
 * over only after that. The holder renews every `renewInterval` and declares loss at `leaseDuration - safetyMargin`
 * after the start of its last good renewal. Required: `renewInterval < leaseDuration / 2`, and a detection deadline of
 * at least two renew intervals.
 */
import { Duration, Result, Schema } from "effect"
import * as StreamId from "../StreamId.ts"

export class OwnershipConfigError extends Schema.TaggedError<OwnershipConfigError>()("OwnershipConfigError", {
  field: Schema.String,
  message: Schema.String
}) {}

export type LockMode = "advisory" | "lease"

export interface OwnershipOptions {
  readonly streamId: string
  readonly instanceId: string
  readonly mode?: LockMode
  /** Wait between attempts to acquire (jittered ±20%). Default 500 ms. */
  readonly acquireInterval?: Duration.Input
  /** Advisory: heartbeat period on the lock session. Default 500 ms. */
  readonly heartbeatInterval?: Duration.Input
  /** Advisory: the holder's own detection deadline. Default 2 s. */
  readonly lossDeadline?: Duration.Input
  /** Advisory: the lock session's idle_session_timeout, the server's release bound. Default 4 s. */
  readonly serverReleaseBound?: Duration.Input
  /** Lease: lease duration by the database's clock. Default 4 s. */
  readonly leaseDuration?: Duration.Input
  /** Lease: renewal period. Default 1 s. */
  readonly renewInterval?: Duration.Input
  /** Minimum gap between the holder's deadline and the server's release. Default 2 s. */
  readonly safetyMargin?: Duration.Input
  /** The lock breaker: off unless set. See `BreakerConfig`. */
  readonly breaker?: { readonly staleAfter: Duration.Input; readonly gracePeriod: Duration.Input }
  /** After losing ownership: wait to acquire again (default), or fail so the process exits for its orchestrator. */
  readonly onLoss?: "wait" | "exit"
  /**
   * After a loss, how long to stay out before competing again (default 1 s): an instance that just lost the stream
   * gives healthy waiters the first chance, instead of flapping it back.
   */
  readonly rejoinDelay?: Duration.Input
  /** Schema of slotkeeper's tables. Default `slotkeeper`. */
  readonly schema?: string
}

export interface BreakerConfig {
  /** A holder whose lock session has shown no activity for longer than this may be terminated by a waiter. */
  readonly staleAfterMs: number
  /** ... but never a holder that acquired less than this long ago. */
  readonly gracePeriodMs: number
}

export interface OwnershipConfig {
  readonly streamId: string
  readonly instanceId: string
  readonly mode: LockMode
  readonly acquireIntervalMs: number
  /** How often ownership is confirmed (advisory heartbeat or lease renewal). */
  readonly checkIntervalMs: number
  /** Loss is declared when no confirmation succeeded for this long, measured from the start of the last good one. */
  readonly lossDeadlineMs: number
  /** The longest the server keeps an unreachable holder's ownership (idle_session_timeout, or the lease duration). */
  readonly serverReleaseBoundMs: number
  readonly leaseDurationMs: number
  readonly safetyMarginMs: number
  readonly breaker: BreakerConfig | undefined
  readonly onLoss: "wait" | "exit"
  readonly rejoinDelayMs: number
  readonly schema: string
}

const ms = (field: string, input: Duration.Input | undefined, fallback: number): number | OwnershipConfigError => {
  if (input === undefined) return fallback
  const d = Duration.fromInput(input)
  if (d._tag === "None") return new OwnershipConfigError({ field, message: `${field}: ${JSON.stringify(input)} is not a duration (e.g. "5 seconds" or 5000)` })
  const value = Duration.toMillis(d.value)
  if (!Number.isFinite(value) || value <= 0) return new OwnershipConfigError({ field, message: `${field} must be a positive, finite duration (got ${JSON.stringify(input)})` })
  return value
}

const fmt = (millis: number) => Duration.format(Duration.millis(millis))

/** Validates and completes the options, or says what to change. */
export type OwnershipConfigInvalid = OwnershipConfigError | StreamId.InvalidStreamId | StreamId.InvalidInstanceId

/**
 * The options checked and completed with their defaults, or the first rule they break (a `Result`: nothing is
 * thrown, nothing runs). The rules are the module's: every timing relation that keeps the holder's deadline before
 * the server's release.
 */
export const make = (options: OwnershipOptions): Result.Result<OwnershipConfig, OwnershipConfigInvalid> => {
  const checked = check(options)
  return checked instanceof OwnershipConfigError || checked instanceof StreamId.InvalidStreamId || checked instanceof StreamId.InvalidInstanceId
    ? Result.fail(checked)
    : Result.succeed(checked)
}

const check = (options: OwnershipOptions): OwnershipConfig | OwnershipConfigInvalid => {
  const invalidStream = StreamId.validate(options.streamId)
  if (invalidStream) return invalidStream
  const invalidInstance = StreamId.validateInstanceId(options.instanceId)
  if (invalidInstance) return invalidInstance
  const mode = options.mode ?? "advisory"
  if (mode !== "advisory" && mode !== "lease") {
    return new OwnershipConfigError({ field: "mode", message: `lock mode ${JSON.stringify(mode)} is not known: use "advisory" or "lease"` })
  }
  const schema = options.schema ?? "slotkeeper"
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    return new OwnershipConfigError({ field: "schema", message: `schema ${JSON.stringify(schema)} is not valid: use a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 characters)` })
  }
  const values = {
    acquireInterval: ms("acquireInterval", options.acquireInterval, 500),
    heartbeatInterval: ms("heartbeatInterval", options.heartbeatInterval, 500),
    lossDeadline: ms("lossDeadline", options.lossDeadline, 2_000),
    serverReleaseBound: ms("serverReleaseBound", options.serverReleaseBound, 4_000),
    leaseDuration: ms("leaseDuration", options.leaseDuration, 4_000),
    renewInterval: ms("renewInterval", options.renewInterval, 1_000),
    safetyMargin: ms("safetyMargin", options.safetyMargin, 2_000),
    rejoinDelay: ms("rejoinDelay", options.rejoinDelay, 1_000)
  }
  for (const v of Object.values(values)) if (v instanceof OwnershipConfigError) return v
  const n = values as { [K in keyof typeof values]: number }
  let breaker: BreakerConfig | undefined
  if (options.breaker !== undefined) {
    const staleAfter = ms("breaker.staleAfter", options.breaker.staleAfter, 0)
    const gracePeriod = ms("breaker.gracePeriod", options.breaker.gracePeriod, 0)
    if (staleAfter instanceof OwnershipConfigError) return staleAfter
    if (gracePeriod instanceof OwnershipConfigError) return gracePeriod
    breaker = { staleAfterMs: staleAfter, gracePeriodMs: gracePeriod }
  }

  if (mode === "advisory") {
    if (n.lossDeadline < 2 * n.heartbeatInterval) {
      return new OwnershipConfigError({
        field: "lossDeadline",
        message: `lossDeadline (${fmt(n.lossDeadline)}) must be at least twice heartbeatInterval (${fmt(n.heartbeatInterval)}), ` +
          `so one slow heartbeat is not a loss: raise lossDeadline or lower heartbeatInterval`
      })
    }
    if (n.lossDeadline + n.safetyMargin > n.serverReleaseBound) {
      return new OwnershipConfigError({
        field: "serverReleaseBound",
        message: `the holder's detection deadline (lossDeadline ${fmt(n.lossDeadline)}) plus the safety margin (${fmt(n.safetyMargin)}) ` +
          `must not exceed the server's release bound (serverReleaseBound ${fmt(n.serverReleaseBound)}): otherwise another instance ` +
          `can become the owner while this one still acts as one. Raise serverReleaseBound or lower lossDeadline`
      })
    }
    if (breaker !== undefined && breaker.staleAfterMs <= n.serverReleaseBound) {
      return new OwnershipConfigError({
        field: "breaker.staleAfter",
        message: `breaker.staleAfter (${fmt(breaker.staleAfterMs)}) must exceed serverReleaseBound (${fmt(n.serverReleaseBound)}): a live ` +
          `holder heartbeats well inside the release bound, so only a holder silent for longer than that is stale`
      })
    }
    return {
      streamId: options.streamId, instanceId: options.instanceId, mode, schema,
      acquireIntervalMs: n.acquireInterval,
      checkIntervalMs: n.heartbeatInterval,
      lossDeadlineMs: n.lossDeadline,
      serverReleaseBoundMs: n.serverReleaseBound,
      leaseDurationMs: n.leaseDuration,
      safetyMarginMs: n.safetyMargin,
      breaker, onLoss: options.onLoss ?? "wait", rejoinDelayMs: n.rejoinDelay
    }
  }

  if (n.renewInterval * 2 >= n.leaseDuration) {
    return new OwnershipConfigError({
      field: "renewInterval",
      message: `renewInterval (${fmt(n.renewInterval)}) must be less than half of leaseDuration (${fmt(n.leaseDuration)}), so one ` +
        `late renewal does not let the lease expire: lower renewInterval or raise leaseDuration`
    })
  }
  const lossDeadline = n.leaseDuration - n.safetyMargin
  if (lossDeadline < 2 * n.renewInterval) {
    return new OwnershipConfigError({
      field: "safetyMargin",
      message: `leaseDuration (${fmt(n.leaseDuration)}) minus safetyMargin (${fmt(n.safetyMargin)}) leaves ${fmt(Math.max(0, lossDeadline))} ` +
        `to detect a loss, less than two renewals (${fmt(2 * n.renewInterval)}): raise leaseDuration or lower renewInterval or safetyMargin`
    })
  }
  if (breaker !== undefined) {
    return new OwnershipConfigError({ field: "breaker", message: "the lock breaker is for advisory mode; a lease expires by itself" })
  }
  return {
    streamId: options.streamId, instanceId: options.instanceId, mode, schema,
    acquireIntervalMs: n.acquireInterval,
    checkIntervalMs: n.renewInterval,
    lossDeadlineMs: lossDeadline,
    serverReleaseBoundMs: n.leaseDuration,
    leaseDurationMs: n.leaseDuration,
    safetyMarginMs: n.safetyMargin,
    breaker: undefined, onLoss: options.onLoss ?? "wait", rejoinDelayMs: n.rejoinDelay
  }
}
