/**
 * PgCluster: an ephemeral PostgreSQL server for a test — `initdb` into a temp folder, a free TCP port on
 * 127.0.0.1, a socket folder of its own, `wal_level=logical` and room for replication slots and walsenders.
 *
 * It starts in about a second and is gone, with its files, when its scope closes, whether the test passed, failed
 * or was interrupted. Everything a test needs to hurt it is on the handle: `restart`, `crash` (SIGKILL, then crash
 * recovery), `stop`/`start`, `terminateBackend`, `setConfig` (+ reload).
 *
 * **Details**
 *
 * - The major version is `options.major`, else the first of `SLOTKEEPER_PG_VERSIONS` (default 18); binaries come
 *   from `PgBinaries` (npm packages, or any folder named by `SLOTKEEPER_PG_BIN[_<major>]`).
 * - As root, the server runs as an unprivileged user (`ServerUser`); otherwise as the current user.
 * - Authentication is `trust` for the `postgres` superuser, unless `password` is given (then scram-sha-256 over
 *   TCP, and `url` carries the password).
 * - Use it from `it.live`, or `layer(PgCluster.layer(), { excludeTestServices: true })`: its waits are in real time
 *   anyway, but the SQL client it uses for admin queries has its own timeouts.
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { newServerDir } from "./Leftovers.ts"
import { PgBinaries, PgServer, ServerUser } from "@slotkeeper/embedded"
import * as PgVersions from "./PgVersions.ts"

export interface PgClusterOptions {
  readonly major?: number
  readonly name?: string
  /** Extra or overriding postgresql.conf settings, e.g. `{ wal_sender_timeout: "5s" }`. */
  readonly settings?: Readonly<Record<string, PgServer.SettingValue>>
  readonly password?: string
  readonly port?: number
  /** `pg_hba.conf` lines before initdb's own (the first match decides). */
  readonly hba?: ReadonlyArray<string>
  /** Files for the data folder (a TLS certificate and key, a CA), owned by the server user, mode 0600. */
  readonly files?: Readonly<Record<string, string>>
}

export type PgClusterError = PgBinaries.PgBinariesError | PgServer.PgServerError | ServerUser.ServerUserError

/** Starts an ephemeral server; it is stopped and its folder removed when the scope closes. */
export const make = (options: PgClusterOptions = {}): Effect.Effect<PgServer.PgServer, PgClusterError, Scope.Scope> =>
  Effect.gen(function*() {
    const user = yield* ServerUser.resolve
    const install = yield* PgBinaries.find(options.major ?? PgVersions.defaultMajor()).pipe(
      Effect.flatMap((found) => PgBinaries.reachableFor(found, user))
    )
    const name = options.name ?? "primary"
    return yield* PgServer.make({
      name,
      install,
      user,
      baseDir: newServerDir(name),
      removeOnClose: true,
      port: options.port,
      password: options.password,
      settings: options.settings,
      hba: options.hba,
      files: options.files,
      initdb: true
    })
  })

/** The cluster of a test or a block of tests, as a service. */
export class PgCluster extends Context.Service<PgCluster, PgServer.PgServer>()("@slotkeeper/testkit/PgCluster") {
  static readonly layer = (options: PgClusterOptions = {}): Layer.Layer<PgCluster, PgClusterError> =>
    Layer.effect(PgCluster, make(options))
}
