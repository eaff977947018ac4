/**
 * Membership: the live runners of a fleet, as this runner sees them — the input of `FleetPlacement`.
 *
 * **Details**
 * - `layerCluster` reads `effect/cluster`'s runner storage (in the control database for `slotkeeper fleet`): the
 *   runners that are registered, heartbeat within the shard-lock expiration, and are marked healthy (the cluster's
 *   runners ping each other and mark one that does not answer unhealthy). It needs `Sharding` running: that is what
 *   registers this runner, heartbeats, and pings the others.
 * - A runner is named by its cluster address, `host:port`, the same on every runner.
 * - `runners` fails when membership cannot be read (the control database unreachable): `Fleet` then keeps what it
 *   runs for at most the expiration, and stops everything after — by then the others have stopped counting it
 *   (its heartbeat is as old), and their placement gives its streams to them.
 */
import { Context, Data, Effect, Layer, Option } from "effect"
import { RunnerStorage } from "effect/cluster/RunnerStorage"
import { Sharding } from "effect/cluster/Sharding"
import { ShardingConfig } from "effect/cluster/ShardingConfig"

export class MembershipUnavailable extends Data.TaggedError("MembershipUnavailable")<{ readonly message: string }> {}

export interface MembershipShape {
  /** This runner's name; it is among `runners` while it is live. */
  readonly self: string
  /** The live runners' names. */
  readonly runners: Effect.Effect<ReadonlyArray<string>, MembershipUnavailable>
}

export class Membership extends Context.Service<Membership, MembershipShape>()("@slotkeeper/core/fleet/Membership") {}

/** The cluster's healthy runners (see the module comment). */
export const layerCluster: Layer.Layer<Membership, never, RunnerStorage | ShardingConfig | Sharding> = Layer.effect(Membership)(
  Effect.gen(function*() {
    // Sharding is required, not used: while this layer is in use the runner is registered and heartbeats
    yield* Sharding
    const storage = yield* RunnerStorage
    const config = yield* ShardingConfig
    const address = Option.getOrUndefined(config.runnerAddress)
    return {
      self: address === undefined ? "" : `${address.host}:${address.port}`,
      runners: storage.getRunners.pipe(
        Effect.map((runners) => runners.filter(([, healthy]) => healthy).map(([r]) => `${r.address.host}:${r.address.port}`)),
        Effect.mapError((e) => new MembershipUnavailable({ message: `the fleet's runners cannot be read: ${e.cause instanceof Error ? e.cause.message : String(e.cause)}` }))
      )
    }
  })
)
