/**
 * SessionSettings: the settings every session slotkeeper opens sets for itself, because the text PostgreSQL prints
 * for a value depends on them — so that `ALTER DATABASE … SET`, `ALTER ROLE … SET` or `postgresql.conf` can never
 * change a line.
 *
 * | setting | pinned to | what it would change |
 * |---|---|---|
 * | `DateStyle` | `ISO, YMD` | dates and timestamps (`01/01/2000 00:00:00 UTC` under `SQL, DMY`) |
 * | `IntervalStyle` | `postgres` | intervals (`P1DT2H` under `iso_8601`) |
 * | `TimeZone` | `UTC` | the offset `timestamptz` values are printed in (local-mean-time offsets with seconds) |
 * | `extra_float_digits` | `1` | floats: the shortest text that reads back to the same float (`0` rounds: `0.3`) |
 * | `bytea_output` | `hex` | bytea (`escape` prints octal escapes) |
 * | `client_encoding` | `UTF8` | every text |
 * | `lc_monetary` | `C` | money (`1.000,00 €` in another locale) |
 *
 * **Details**: they are sent in the connection's startup packet, which PostgreSQL applies after the database's and
 * the role's defaults, so they win; a walsender (the replication connection) takes them the same way. A pooler in
 * transaction mode may refuse unknown startup parameters (PgBouncer: list them in `ignore_startup_parameters`); the
 * replication connection never goes through one.
 */

/** The settings, as startup parameters (names lowercased, as `@effect/sql-pg` wants them). */
export const startupParameters: Readonly<Record<string, string>> = {
  datestyle: "ISO, YMD",
  intervalstyle: "postgres",
  timezone: "UTC",
  extra_float_digits: "1",
  bytea_output: "hex",
  client_encoding: "UTF8",
  lc_monetary: "C"
}

/** The same as a libpq `options` string (`-c name=value …`, spaces escaped), for `pg`'s clients. */
export const options: string = Object.entries(startupParameters)
  .map(([name, value]) => `-c ${name}=${value.replace(/([\\ ])/g, "\\$1")}`)
  .join(" ")

/**
 * `url` with the settings added to its `options` parameter (after any the URL has, so that they win), for `pg`'s
 * clients, whose URL would otherwise override an `options` given beside it. A string that is not a URL is returned as
 * it is.
 */
export const connectionString = (url: string): string => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return url
  }
  const own = parsed.searchParams.get("options")
  parsed.searchParams.set("options", own === null || own.trim() === "" ? options : `${own} ${options}`)
  return parsed.toString()
}
