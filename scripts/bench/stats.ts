/**
 * Stats: the benchmark's numbers as reported — median, min and max of several runs — and the markdown they go into.
 */

export interface Summary {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly runs: number
}

export const summarize = (xs: ReadonlyArray<number>): Summary => {
  const s = [...xs].sort((a, b) => a - b)
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
  return { median, min: s[0]!, max: s.at(-1)!, runs: s.length }
}

const number = (x: number, digits: number) => x.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** `median (min–max)`, rounded to `digits`. */
export const cell = (xs: ReadonlyArray<number>, digits = 0): string => {
  if (xs.length === 0) return "—"
  const s = summarize(xs)
  return `${number(s.median, digits)} (${number(s.min, digits)}–${number(s.max, digits)})`
}

export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n")
