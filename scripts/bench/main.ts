/**
 * The benchmark: throughput against the physical limit, memory, handover and detection latencies, failover, lag
 * under load — side by side, on this machine, each the median of RUNS runs with min and max, and one table of every
 * goal (issue 16) beside its baseline. Not part of `npm test`.
 *
 *   npm run bench                          # everything; writes docs/benchmarks.md and docs/charts/*.svg
 *   npm run bench -- throughput handover   # some parts; prints them, writes nothing
 *   PROFILE_DIR=/tmp/prof RUNS=1 npm run bench -- throughput   # with --cpu-prof (see throughput.ts)
 *   WORKLOADS=2,4 RUNS=1 npm run bench -- throughput   # only those workloads
 *   RUNS=5 ROWS=1000000 TRANSACTIONS=100000 npm run bench
 *
 * Parts: `throughput` (throughput.ts: W1–W4, each reader, time to ownership), `memory` (the CLI on a 1 GB
 * transaction), `handover` (handover.ts), `detection` (detection.ts), `failover` (failover.ts), `lag` (lag.ts,
 * `LAG_SECONDS`), `backfill` (backfill.ts, `BACKFILL_ROWS`), `fleet` (fleet.ts: a 30-stream backlog over 3 runners and a killed runner, `FLEET_BACKLOG_STREAMS`; idle streams on one runner, `FLEET_STREAMS`; `FLEET_PARTS`); `load` (load.ts: liveness under sustained load, 10 minutes per lock mode) runs only when named.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Logger } from "effect"
import { Leftovers } from "@slotkeeper/testkit"
import * as Backfill from "./backfill.ts"
import * as Charts from "./charts.ts"
import * as Detection from "./detection.ts"
import * as Failover from "./failover.ts"
import * as FleetBench from "./fleet.ts"
import * as Handover from "./handover.ts"
import * as Lag from "./lag.ts"
import * as Load from "./load.ts"
import { cell, summarize, table } from "./stats.ts"
import * as Throughput from "./throughput.ts"

const runs = Number(process.env.RUNS ?? 3)
const rows = Number(process.env.ROWS ?? 1_000_000)
const transactions = Number(process.env.TRANSACTIONS ?? 100_000)
const lagSeconds = Number(process.env.LAG_SECONDS ?? 60)
const backfillRows = Number(process.env.BACKFILL_ROWS ?? 5_000_000)
// WORKLOADS=2,4: only those throughput workloads (for investigating one; a full run measures all)
const onlyWorkloads = process.env.WORKLOADS?.split(",").map(Number)
const parts = process.argv.slice(2)
const all = parts.length === 0
const wanted = (part: string) => (part === "load" ? parts.includes(part) : all || parts.includes(part))
const log = (text: string) => process.stderr.write(`[bench] ${text}\n`)
const docs = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "docs")

/** One goal of issue 16: what it is, its target, the figure before the work, the figure now, and whether it is met. */
interface Goal {
  readonly goal: string
  readonly target: string
  readonly baseline: string
  readonly measured: string
  readonly met: boolean
}

const [cliFile, core, cliHttp] = [Throughput.readers[3], Throughput.readers[2], Throughput.readers[4]]
const workloadLabels = ["W1", "W2", "W3", "W4"]
// the figures issue 16 was filed with (same machine kind, the code before it)
const baselines: Record<string, Record<string, string>> = {
  [cliFile]: { W1: "1.13×", W2: "0.88×", W3: "0.82×", W4: "—" },
  [core]: { W1: "2.15×", W2: "1.34×", W3: "1.47×", W4: "—" },
  [cliHttp]: { W1: "—", W2: "—", W3: "—", W4: "—" }
}
const targets: Record<string, number> = { [cliFile]: 1.0, [core]: 1.3, [cliHttp]: 0.8 }

const throughput = Effect.gen(function*() {
  const sections: Array<string> = []
  const goals: Array<Goal> = []
  const ratiosByReader = new Map<Throughput.Reader, Array<number | undefined>>()
  const ownership: Array<number> = []
  let version = ""
  let w2Rss: ReadonlyArray<readonly [number, number]> | undefined
  let w2Peak: Array<number> = []
  const list = Throughput.workloads(rows, transactions)
  for (const [w, workload] of list.entries()) {
    if (onlyWorkloads !== undefined && !onlyWorkloads.includes(w + 1)) continue
    const measured = new Map<Throughput.Reader, Array<Throughput.Measured>>()
    const notes = new Map<Throughput.Reader, string>()
    const writes: Array<number> = []
    for (let i = 1; i <= runs; i++) {
      log(`throughput: ${workload.name}, run ${i} of ${runs}`)
      const r = yield* Throughput.run(workload)
      version = r.version
      writes.push(r.writeMs / 1000)
      ownership.push(r.ownershipMs)
      for (const [reader, m] of r.results) {
        if (typeof m === "string") notes.set(reader, m)
        else measured.set(reader, [...(measured.get(reader) ?? []), m])
      }
    }
    const rate = (m: Throughput.Measured) => m.rows / (m.ms / 1000)
    const ceiling = measured.get(Throughput.readers[0])
    const ratiosOf = (reader: Throughput.Reader) => {
      const ms = measured.get(reader)
      // each run's ratio to that run's ceiling: the same server and workload
      return ms === undefined || ceiling === undefined ? [] : ms.map((m, i) => rate(m) / rate(ceiling[i]!))
    }
    const rowsOut = Throughput.readers.map((reader) => {
      const ms = measured.get(reader)
      if (ms === undefined) return [reader, notes.get(reader) ?? "—", "", ""]
      const ratios = ratiosOf(reader)
      return [reader, cell(ms.map(rate)), ratios.length === 0 ? "—" : cell(ratios, 2), cell(ms.flatMap((m) => (m.rssMB === undefined ? [] : [m.rssMB])))]
    })
    const label = workloadLabels[w] ?? `W${w + 1}`
    // one transaction: nothing can be delivered before its commit has been received, so the time to the first change
    // is the reading, and the rest is delivering the transaction from the spool
    const coreRuns = measured.get(core) ?? []
    const firstChanges = coreRuns.flatMap((m) => (m.firstChangeMs === undefined ? [] : [m.firstChangeMs / 1000]))
    const split = workload.oneTransaction === true && firstChanges.length > 0 && ceiling !== undefined
      ? ` The transaction is delivered only once its commit has been received (nothing uncommitted reaches a consumer): the in-process reader had it — its first change — ${cell(firstChanges, 1)} s after its start, of ${cell(coreRuns.map((m) => m.ms / 1000), 1)} s in all; pg_recvlogical, which only receives, took ${cell(ceiling.map((m) => m.ms / 1000), 1)} s.`
      : ""
    sections.push(`### ${label}: ${workload.name}\n\nWritten in ${cell(writes, 1)} s.${split}\n\n${table(["reader", "rows/s", "vs pg_recvlogical", "peak RSS (MB)"], rowsOut)}`)
    for (const reader of Throughput.readers) {
      const ratios = ratiosOf(reader)
      const median = ratios.length === 0 ? undefined : summarize(ratios).median
      ratiosByReader.set(reader, [...(ratiosByReader.get(reader) ?? []), median])
      const target = targets[reader]
      if (target === undefined) continue
      goals.push({
        goal: `${label} throughput, ${reader}, vs pg_recvlogical`,
        target: `≥ ${target.toFixed(1)}×`,
        baseline: baselines[reader]?.[label] ?? "—",
        measured: ratios.length === 0 ? "not measured" : `${cell(ratios, 2)}×`,
        met: median !== undefined && median >= target
      })
    }
    if (label === "W2") {
      const cli = measured.get(cliFile) ?? []
      w2Rss = cli[0]?.rssSeries
      w2Peak = cli.flatMap((m) => (m.rssMB === undefined ? [] : [m.rssMB]))
    }
  }
  goals.push({
    goal: "time to ownership from process start (warm server)",
    target: "≤ 1,000 ms",
    baseline: "—",
    measured: `${cell(ownership)} ms`,
    met: ownership.length > 0 && summarize(ownership).median <= 1000
  })
  if (w2Peak.length > 0) {
    goals.push({ goal: "CLI peak RSS, W2", target: "≤ 200 MB", baseline: "424 MB", measured: `${cell(w2Peak)} MB`, met: summarize(w2Peak).max <= 200 })
  }
  const chart = Charts.bars({
    title: "Throughput vs pg_recvlogical (median ratio)",
    yLabel: "× pg_recvlogical",
    groups: list.map((w, i) => `${workloadLabels[i]}: ${w.name}`),
    series: [cliFile, cliHttp, core].map((reader) => ({ name: reader.replace(" (local receiver)", ""), values: ratiosByReader.get(reader) ?? [] })),
    goal: { value: 1, label: "pg_recvlogical" }
  })
  return {
    version,
    goals,
    w2Rss,
    chart,
    text: `## Throughput\n\nEach reader alone, in its own process, on its own copy of the slot, after the workload was written; timed from spawning it until it has every row (start-up included). Cells are median (min–max) of ${runs} runs; the ratio is each run's rows/s over that run's pg_recvlogical. After each run a new \`slotkeeper run\` process is started on the same stream and timed until it owns it (time to ownership: ${cell(ownership)} ms).\n\n${sections.join("\n\n")}`
  }
})

const memory = Effect.gen(function*() {
  const workload = Throughput.toasted(100_000, 10)
  log(`memory: ${workload.name}`)
  const r = yield* Throughput.run(workload, [Throughput.readers[0], cliFile])
  const m = r.results.get(cliFile)
  const measured = typeof m === "object" ? m : undefined
  return {
    measured,
    goal: {
      goal: "CLI peak RSS, a 1 GB transaction (100k rows × 10 kB)",
      target: "≤ 200 MB",
      baseline: "—",
      measured: measured?.rssMB === undefined ? "not measured" : `${measured.rssMB} MB`,
      met: measured?.rssMB !== undefined && measured.rssMB <= 200
    } satisfies Goal,
    text: `## Memory\n\n\`slotkeeper run --sink file:\` on ${workload.name} (written in ${(r.writeMs / 1000).toFixed(1)} s): peak RSS ${measured?.rssMB ?? "?"} MB, ${measured === undefined ? "" : `${Math.round(measured.rows / (measured.ms / 1000)).toLocaleString("en")} rows/s`}.`
  }
})

const program = Effect.gen(function*() {
  const out: Array<string> = []
  const goals: Array<Goal> = []
  const charts: Array<{ readonly file: string; readonly svg: string; readonly alt: string }> = []
  let version = "18"
  const rssSeries: Array<{ readonly name: string; readonly points: ReadonlyArray<readonly [number, number]> }> = []
  if (wanted("throughput")) {
    const t = yield* throughput
    version = t.version
    goals.push(...t.goals)
    out.push(t.text)
    charts.push({ file: "throughput.svg", svg: t.chart, alt: "throughput per workload" })
    if (t.w2Rss !== undefined) rssSeries.push({ name: "W2: one 1M-row transaction", points: t.w2Rss })
  }
  if (wanted("memory")) {
    const m = yield* memory
    goals.push(m.goal)
    out.push(m.text)
    if (m.measured?.rssSeries !== undefined) rssSeries.push({ name: "one 1 GB transaction", points: m.measured.rssSeries })
  }
  if (rssSeries.length > 0) {
    charts.push({
      file: "rss.svg",
      alt: "CLI resident memory over time",
      svg: Charts.lines({
        title: "slotkeeper run --sink file: resident memory",
        xLabel: "ms since the process started",
        yLabel: "RSS (MB)",
        series: rssSeries,
        goal: { value: 200, label: "200 MB" }
      })
    })
  }
  if (wanted("handover")) {
    const h = yield* Handover.report(runs, log)
    out.push(h.text)
    for (const lock of ["advisory", "lease"] as const) {
      const graceful = h.results.find((r) => r.lock === lock && r.fault === "graceful")!
      goals.push({
        goal: `graceful handover (SIGTERM), ${lock}`,
        target: "≤ 300 ms",
        baseline: "522–572 ms",
        measured: `${cell(graceful.takeovers)} ms`,
        met: summarize(graceful.takeovers).median <= 300
      })
      for (const fault of ["crash", "pause", "partition"] as const) {
        const r = h.results.find((x) => x.lock === lock && x.fault === fault)!
        const baseline = { advisory: { crash: "—", pause: "~9.6 s", partition: "9.5–10.3 s" }, lease: { crash: "~9.2 s", pause: "~9.6 s", partition: "~9.9 s" } }[lock][fault]
        goals.push({
          goal: `takeover after ${{ crash: "SIGKILL", pause: "a process pause", partition: "a half-open partition" }[fault]}, ${lock}`,
          target: "≤ 5,000 ms (every run)",
          baseline,
          measured: `${cell(r.takeovers)} ms`,
          met: summarize(r.takeovers).max <= 5000
        })
      }
    }
    const faults = ["graceful", "crash", "pause", "partition"] as const
    charts.push({
      file: "takeover.svg",
      alt: "takeover time per fault and lock mode",
      svg: Charts.bars({
        title: "Event → the other instance's first change (median, default timings)",
        yLabel: "ms",
        groups: ["SIGTERM", "SIGKILL", "process paused", "half-open partition"],
        series: (["advisory", "lease"] as const).map((lock) => ({
          name: lock,
          values: faults.map((fault) => {
            const r = h.results.find((x) => x.lock === lock && x.fault === fault)
            return r === undefined ? undefined : summarize(r.takeovers).median
          })
        })),
        goal: { value: 5000, label: "goal: 5 s" }
      })
    })
  }
  if (wanted("detection")) out.push(yield* Detection.report(Math.max(runs, 5), log))
  if (wanted("failover")) out.push(yield* Failover.report(runs, log))
  if (wanted("lag")) {
    const l = yield* Lag.report(lagSeconds, log)
    out.push(l.text)
    goals.push({
      goal: "p99 commit-to-sink lag at 5,000 rows/s (the lag metric)",
      target: "≤ 100 ms",
      baseline: "—",
      measured: Number.isFinite(l.result.p99) ? `≤ ${l.result.p99 * 1000} ms (p50 ≤ ${l.result.p50 * 1000} ms)` : "> 60 s",
      met: l.result.p99 <= 0.1
    })
  }
  if (wanted("backfill")) {
    const b = yield* Backfill.report(runs, backfillRows, log)
    out.push(b.text)
    const lags = b.results.map((r) => r.lagMax)
    goals.push(
      { goal: `backfill of ${backfillRows.toLocaleString("en")} rows to the file sink vs COPY TO STDOUT`, target: "≥ 0.7×", baseline: "—", measured: `${cell(b.ratios, 2)}×`, met: summarize(b.ratios).median >= 0.7 },
      { goal: "CLI peak RSS during the backfill", target: "≤ 200 MB", baseline: "—", measured: `${cell(b.rss)} MB`, met: b.rss.length > 0 && summarize(b.rss).max <= 200 },
      { goal: "stream lag during the backfill (max)", target: "≤ 1 s", baseline: "—", measured: lags.map((l) => (Number.isFinite(l) ? `≤ ${Math.round(l * 1000)} ms` : "> 60 s")).join(", "), met: lags.every((l) => l <= 1) }
    )
  }
  if (wanted("fleet")) {
    const f = yield* FleetBench.report(log)
    out.push(f.text)
  }
  if (wanted("load")) {
    const seconds = Number(process.env.LOAD_SECONDS ?? 600)
    const modes = (process.env.MODES ?? "advisory,lease").split(",") as Array<"advisory" | "lease">
    const args = (process.env.ARGS ?? "").split(" ").filter((a) => a.length > 0)
    const results: Array<Load.LoadResult> = []
    for (const mode of modes) {
      log(`load: ${mode}, ${seconds} s`)
      results.push(yield* Load.run(mode, seconds, args))
    }
    for (const r of results) {
      goals.push({ goal: `spurious ownership losses, ${r.mode}, ${r.seconds} s of W1–W3`, target: "0", baseline: "—", measured: String(r.losses), met: r.losses === 0 })
    }
    out.push(`## Liveness under load

W1–W3 written in a loop while \`slotkeeper run\` streams them; a probe session's trivial query every 100 ms (what a heartbeat waits).

${table(Load.tableHeader, Load.tableRows(results))}`)
  }
  const cpu = cpus()[0]?.model ?? "unknown CPU"
  const header = [
    "# Benchmarks",
    "",
    `Generated by \`npm run bench\` (scripts/bench/) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, ` +
    `Linux, Node ${process.version}, PostgreSQL ${version} (the test kit's npm build)` +
    `${Throughput.recvlogical === undefined ? "" : `; ${Throughput.recvlogicalVersion()} from Debian`}. Every figure is the median of the runs with its min–max. ` +
    "Earlier measurements and the investigations behind them: [benchmark-history.md](benchmark-history.md).",
    ""
  ].join("\n")
  const goalTable = goals.length === 0 ? "" : `## Goals\n\nEvery goal of the performance issue (16) and of the backfill issue (17), with the figure it was filed with and the figure measured in this run.\n\n${
    table(["goal", "target", "before", "measured", "met"], goals.map((g) => [g.goal, g.target, g.baseline, g.measured, g.met ? "yes" : "**no**"]))
  }\n\n${charts.map((c) => `![${c.alt}](charts/${c.file})`).join("\n\n")}`
  const document = `${header}\n${[goalTable, ...out].filter((x) => x.length > 0).join("\n\n")}\n`
  process.stdout.write(document)
  if (all) {
    mkdirSync(join(docs, "charts"), { recursive: true })
    for (const c of charts) writeFileSync(join(docs, "charts", c.file), c.svg)
    writeFileSync(join(docs, "benchmarks.md"), document)
    log(`written to ${join(docs, "benchmarks.md")} and docs/charts/`)
  } else if (process.env.CHARTS_DIR !== undefined) {
    mkdirSync(process.env.CHARTS_DIR, { recursive: true })
    for (const c of charts) writeFileSync(join(process.env.CHARTS_DIR, c.file), c.svg)
  }
})

// the measured components' own logs go to stderr with the progress; stdout carries the document
await Effect.runPromise(program.pipe(Effect.provideService(Logger.LogToStderr, true)))
Leftovers.removeRun(Leftovers.runId())
