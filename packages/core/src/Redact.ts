/**
 * Redact: connection URLs as they may be shown — in logs, errors and `status` — with the password (and any query
 * parameter that looks like a secret: password, token, key, signature) replaced. Every place that prints a URL goes
 * through `url`; text that may hold a URL the parser would refuse (a user's malformed option, an error message)
 * through `text`, which works on the characters alone. The CLI's last line before an exit goes through `text` too.
 */

/** `postgres://user:secret@host/db` -> `postgres://user:***@host/db`; text that is not a URL is not shown at all. */
export const url = (text: string): string => {
  try {
    const u = new URL(text)
    if (u.password !== "") u.password = "***"
    for (const key of [...u.searchParams.keys()]) if (/pass|token|secret|key|auth|sig/i.test(key)) u.searchParams.set(key, "***")
    return u.toString()
  } catch {
    return "(a URL that could not be parsed; not shown)"
  }
}

// a URL's query parameter, or libpq's keyword form (`host=db password=secret`, also at the very start, a quoted value
// with its spaces)
const secretParameter = /((?:^|[?&;\s])(?:[a-z_]*)(?:pass|token|secret|key|auth|sig)[a-z_]*\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^&\s"']*)/gi
// up to the last "@" before the path: a password may hold an unencoded "@"
const userinfo = /([a-z][a-z0-9+.-]*:\/\/[^/@\s:"']*):[^/\s"']*@/gi

/**
 * Any text with URL passwords (`scheme://user:password@`) and secret-looking parameters (of a URL's query, or of
 * libpq's `key=value` form) replaced by `***`.
 */
export const text = (value: string): string => value.replace(userinfo, "$1:***@").replace(secretParameter, "$1***")

