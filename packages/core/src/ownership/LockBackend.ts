/**
 * LockBackend: what a way of holding a stream (advisory lock, lease row) must offer the supervisor.
 *
 * The supervisor owns the timing (polling, heartbeats, deadlines, backoff); a backend only knows how to make one
 * attempt, one check, one release and one proof, each a bounded statement. That split keeps the timing logic testable
 * with `TestClock` against an in-memory backend, and the PostgreSQL logic testable against real servers.
 */
import type { Effect, Scope } from "effect"
import { Schema } from "effect"
import type { CheckOutcome } from "./Liveness.ts"
import type { ServerInstance } from "./ServerInstance.ts"

/** Who holds the stream, as far as a waiting instance can see. */
export interface HolderInfo {
  /** The holder's instance id (from the ownership table), if known. */
  readonly holder?: string | undefined
  readonly epoch?: number | undefined
  /** When the holder acquired, by the database's clock (ISO text), if known. */
  readonly since?: string | undefined
  /** Advisory: the backend pid holding the session lock, its application_name and how long it has been idle. */
  readonly pid?: number | undefined
  readonly applicationName?: string | undefined
  readonly idleMs?: number | undefined
  /** How long ago the holder acquired, by the database's clock. */
  readonly heldMs?: number | undefined
}

/** What this instance holds; what guarded writes prove. */
export interface Held {
  readonly epoch: number
  /** Advisory: the lock session's backend pid and its backend_start (a pid can be reused by a new backend). */
  readonly pid?: number | undefined
  readonly backendStart?: string | undefined
  /** The server the stream was acquired on; the replication connection must reach the same one. */
  readonly server?: ServerInstance | undefined
}

export type AttemptResult =
  | { readonly _tag: "Acquired"; readonly held: Held }
  | { readonly _tag: "Busy"; readonly holder: HolderInfo | undefined }

export class LockBackendError extends Schema.TaggedError<LockBackendError>()("LockBackendError", {
  operation: Schema.String,
  message: Schema.String,
  /** A fault that may pass (connection refused, server restarting): retried with a schedule. */
  retryable: Schema.Boolean,
  /** The error it comes from (a `SqlError`), kept; `message` already says what it means. */
  cause: Schema.optional(Schema.Defect())
}) {}

/** A session to compete for and hold the stream with; it ends (releasing a session lock) when its scope closes. */
export interface LockSession {
  /** One attempt to acquire. On success the fencing epoch has been bumped and in-flight guarded writes have drained. */
  readonly tryAcquire: Effect.Effect<AttemptResult, LockBackendError>
  /** One ownership check (heartbeat or renewal); never fails, its outcome feeds `Liveness`. */
  readonly check: (held: Held) => Effect.Effect<CheckOutcome>
  /** Gives ownership up so another instance can take it at once (best effort). */
  readonly release: (held: Held) => Effect.Effect<void>
  /**
   * While its scope is open, listens for another instance's graceful release of this stream (`ReleaseNotice`); the
   * effect it returns completes at the next one, or never. Optional: without it a waiter only polls.
   */
  readonly releases?: Effect.Effect<Effect.Effect<void>, never, Scope.Scope>
  /** The lock breaker: terminate a stale holder's session. True when a backend was terminated. */
  readonly breakHolder: (holder: HolderInfo) => Effect.Effect<boolean, LockBackendError>
}

export interface LockBackend {
  readonly mode: "advisory" | "lease"
  /** Opens a session to compete with. */
  readonly open: Effect.Effect<LockSession, LockBackendError, Scope.Scope>
}
