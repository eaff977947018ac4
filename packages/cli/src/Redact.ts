/**
 * Redact: connection URLs as they may be shown — in logs, errors and `status` — with the password (and any query parameter that looks like a secret: password, token, key, signature) replaced. Every
 * place that prints a URL goes through `url`.
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
