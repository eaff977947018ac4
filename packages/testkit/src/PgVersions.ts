/**
 * PgVersions: which PostgreSQL major versions a test runs against.
 *
 * `SLOTKEEPER_PG_VERSIONS` is a comma-separated list of majors (e.g. `15,18`); the default is `18`. A test file
 * that should hold on several versions iterates `PgVersions.matrix()` (e.g. with `describe.each`), and a cluster
 * made without an explicit version uses `PgVersions.defaultMajor()`, the first of the list.
 */
export const supported: ReadonlyArray<number> = [14, 15, 16, 17, 18]

const parse = (text: string): Array<number> => {
  const majors = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0).map(Number)
  for (const m of majors) {
    if (!supported.includes(m)) {
      throw new Error(`SLOTKEEPER_PG_VERSIONS: ${JSON.stringify(text)} names ${m}; supported majors are ${supported.join(", ")}`)
    }
  }
  return majors
}

/** The majors selected by `SLOTKEEPER_PG_VERSIONS` (default `[18]`). */
export const matrix = (fallback: ReadonlyArray<number> = [18]): ReadonlyArray<number> => {
  const env = process.env.SLOTKEEPER_PG_VERSIONS
  const majors = env === undefined || env.trim() === "" ? [...fallback] : parse(env)
  return majors.length > 0 ? majors : [...fallback]
}

export const defaultMajor = (): number => matrix()[0] ?? 18
