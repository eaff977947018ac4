/**
 * Following a backfill from `slotkeeper backfill`: what its progress line says, from samples of its row in the
 * `backfills` table — pure, so that the rate and the time left are tested without a terminal.
 *
 * **Details**
 * - The rate is measured over what this command saw (rows gained between its first sample and the last, over the time
 *   between them), not since the request: a backfill that waited for an owner, or resumed after a handover, would
 *   otherwise show a rate it never had. Until two samples a second apart exist there is no rate and no time left.
 * - The size is PostgreSQL's estimate (`pg_class.reltuples`, kept by ANALYZE and autovacuum), shown as "about";
 *   rows past it (the estimate was low, or the table grew) show no percentage above 99% and no time left.
 */
export interface Sample {
  /** Milliseconds (any clock, the same for every sample). */
  readonly at: number
  readonly rows: number
  readonly state: string
}

export interface Progress {
  readonly rows: number
  readonly estimate: number | null
  readonly rowsPerSecond: number | null
  readonly secondsLeft: number | null
  readonly percent: number | null
}

export const progress = (first: Sample, last: Sample, estimate: number | null): Progress => {
  const seconds = (last.at - first.at) / 1000
  const rowsPerSecond = seconds >= 1 && last.rows > first.rows ? (last.rows - first.rows) / seconds : null
  const known = estimate !== null && estimate > 0 ? estimate : null
  const percent = known === null ? null : last.state === "done" ? 100 : Math.min(99, Math.floor((last.rows / known) * 100))
  const secondsLeft = last.state === "running" && known !== null && rowsPerSecond !== null && last.rows < known ? Math.ceil((known - last.rows) / rowsPerSecond) : null
  return { rows: last.rows, estimate: known, rowsPerSecond: rowsPerSecond === null ? null : Math.round(rowsPerSecond), secondsLeft, percent }
}

const duration = (s: number) => (s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`)

/** The line: `public.items: 1,200,000 of about 5,000,000 rows (24%), 140,000 rows/s, about 27 s left`. */
export const line = (table: string, state: string, p: Progress): string =>
  `${table}: ${state === "running" ? "" : `${state}, `}${p.rows.toLocaleString("en")}${p.estimate === null ? "" : ` of about ${p.estimate.toLocaleString("en")}`} rows` +
  `${p.percent === null ? "" : ` (${p.percent}%)`}${p.rowsPerSecond === null ? "" : `, ${p.rowsPerSecond.toLocaleString("en")} rows/s`}` +
  `${p.secondsLeft === null ? "" : `, about ${duration(p.secondsLeft)} left`}`
