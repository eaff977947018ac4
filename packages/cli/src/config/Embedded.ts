/**
 * Embedded: the optional `@slotkeeper/embedded` package (a local PostgreSQL, Linux x64 only), loaded only when a
 * command needs it — `run` without `--database-url`, and `embedded`. The CLI lists it as an optional dependency: npm
 * installs it where its binaries exist and skips it elsewhere (and `npm install --omit=optional`, as the container
 * image does, leaves it out). Where it is missing, the command says what to do instead: exit 2.
 */
import { Effect } from "effect"
import { ConfigInvalid } from "./RunConfig.ts"

export type EmbeddedModule = typeof import("@slotkeeper/embedded")

/** The package, or why it cannot be had here and what to do instead. */
export const load = (option: string): Effect.Effect<EmbeddedModule, ConfigInvalid> =>
  Effect.tryPromise({
    try: () => import("@slotkeeper/embedded"),
    catch: (e) => {
      const where = `${process.platform}-${process.arch}`
      const missing = (e as { code?: string }).code === "ERR_MODULE_NOT_FOUND"
      const why = where !== "linux-x64"
        ? `the embedded PostgreSQL has binaries for linux-x64 only, not ${where}`
        : missing
        ? "the embedded PostgreSQL is not installed (the optional package @slotkeeper/embedded)"
        : `the embedded PostgreSQL cannot be loaded: ${(e as Error).message}`
      return new ConfigInvalid({
        option,
        message: `${option}: ${why}. Give a server with --database-url (or DATABASE_URL)${where === "linux-x64" && missing ? ", or npm install @slotkeeper/embedded" : ""}`
      })
    }
  })

/** Where the embedded server keeps its data unless `--data-dir` / `SLOTKEEPER_EMBEDDED_DIR` says otherwise. */
export const defaultDir = ".slotkeeper/postgres-18"

/**
 * The embedded server started (for the scope) in `dir` on `port`, with the package's defaults for what is not given
 * (`defaultDir`, `EmbeddedPostgres.defaultPort`); `option` names what to change where the package is missing.
 */
export const start = (option: string, settings: { readonly dir?: string | undefined; readonly port?: number | undefined }) =>
  Effect.flatMap(load(option), ({ EmbeddedPostgres }) =>
    EmbeddedPostgres.make({ dir: settings.dir ?? defaultDir, port: settings.port ?? EmbeddedPostgres.defaultPort }))
