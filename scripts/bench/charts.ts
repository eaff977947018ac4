/**
 * Charts for docs/benchmarks.md and the README: plain SVG text, no dependency — grouped bars (a value per series per
 * group, with an optional goal line) and lines (y over x per series).
 */

const palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** A round upper bound for an axis holding `max`. */
const niceMax = (max: number) => {
  if (!(max > 0)) return 1
  const magnitude = 10 ** Math.floor(Math.log10(max))
  for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step * magnitude >= max) return step * magnitude
  return 10 * magnitude
}

const ticks = (max: number, n = 5) => Array.from({ length: n + 1 }, (_, i) => (max * i) / n)
const label = (v: number) => (Math.abs(v) >= 1000 ? v.toLocaleString("en", { maximumFractionDigits: 0 }) : String(Math.round(v * 100) / 100))

/** The parts both charts share: background, title, the y axis' label, and a grid line with its value per y tick. */
const frame = (o: { readonly width: number; readonly height: number; readonly left: number; readonly top: number; readonly plotW: number; readonly plotH: number; readonly title: string; readonly yLabel: string; readonly yMax: number; readonly y: (v: number) => number }): Array<string> => [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${o.width}" height="${o.height}" viewBox="0 0 ${o.width} ${o.height}" font-family="sans-serif" font-size="11">`,
  `<rect width="${o.width}" height="${o.height}" fill="white"/>`,
  `<text x="${o.width / 2}" y="20" text-anchor="middle" font-size="14">${escape(o.title)}</text>`,
  `<text transform="translate(14 ${o.top + o.plotH / 2}) rotate(-90)" text-anchor="middle">${escape(o.yLabel)}</text>`,
  ...ticks(o.yMax).flatMap((t) => [
    `<line x1="${o.left}" x2="${o.left + o.plotW}" y1="${o.y(t)}" y2="${o.y(t)}" stroke="#ddd"/>`,
    `<text x="${o.left - 6}" y="${o.y(t) + 4}" text-anchor="end">${label(t)}</text>`
  ])
]

/** A dashed horizontal goal line with its label. */
const goalLine = (goal: { readonly value: number; readonly label: string }, left: number, plotW: number, y: (v: number) => number): Array<string> => [
  `<line x1="${left}" x2="${left + plotW}" y1="${y(goal.value)}" y2="${y(goal.value)}" stroke="#e15759" stroke-dasharray="6 4"/>`,
  `<text x="${left + plotW}" y="${y(goal.value) - 4}" text-anchor="end" fill="#e15759">${escape(goal.label)}</text>`
]

export interface Bars {
  readonly title: string
  readonly yLabel: string
  /** Group names along the x axis. */
  readonly groups: ReadonlyArray<string>
  /** One value per group (undefined: not measured). */
  readonly series: ReadonlyArray<{ readonly name: string; readonly values: ReadonlyArray<number | undefined> }>
  /** A horizontal goal line. */
  readonly goal?: { readonly value: number; readonly label: string }
}

export const bars = (chart: Bars): string => {
  const width = 760
  const height = 340
  const left = 70
  const right = 20
  const top = 40
  const bottom = 90
  const plotW = width - left - right
  const plotH = height - top - bottom
  const all = chart.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined))
  const max = niceMax(Math.max(...all, chart.goal?.value ?? 0))
  const y = (v: number) => top + plotH - (v / max) * plotH
  const groupW = plotW / chart.groups.length
  const barW = (groupW * 0.8) / chart.series.length
  const out = frame({ width, height, left, top, plotW, plotH, title: chart.title, yLabel: chart.yLabel, yMax: max, y })
  chart.groups.forEach((group, g) => {
    chart.series.forEach((s, i) => {
      const v = s.values[g]
      if (v === undefined) return
      const x = left + g * groupW + groupW * 0.1 + i * barW
      out.push(`<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(top + plotH - y(v)).toFixed(1)}" fill="${palette[i % palette.length]}"><title>${escape(`${s.name}: ${label(v)}`)}</title></rect>`)
    })
    const words = group.split(" ")
    const lines: Array<string> = []
    for (const w of words) {
      if (lines.length > 0 && (lines.at(-1)! + " " + w).length <= 26) lines[lines.length - 1] += ` ${w}`
      else lines.push(w)
    }
    lines.slice(0, 3).forEach((l, k) => out.push(`<text x="${left + g * groupW + groupW / 2}" y="${top + plotH + 16 + k * 13}" text-anchor="middle">${escape(l)}</text>`))
  })
  if (chart.goal !== undefined) out.push(...goalLine(chart.goal, left, plotW, y))
  chart.series.forEach((s, i) => {
    const x = left + i * 190
    out.push(`<rect x="${x}" y="${height - 22}" width="10" height="10" fill="${palette[i % palette.length]}"/>`)
    out.push(`<text x="${x + 14}" y="${height - 13}">${escape(s.name)}</text>`)
  })
  out.push("</svg>")
  return `${out.join("\n")}\n`
}

export interface Lines {
  readonly title: string
  readonly xLabel: string
  readonly yLabel: string
  readonly series: ReadonlyArray<{ readonly name: string; readonly points: ReadonlyArray<readonly [number, number]> }>
  readonly goal?: { readonly value: number; readonly label: string }
}

export const lines = (chart: Lines): string => {
  const width = 760
  const height = 320
  const left = 70
  const right = 20
  const top = 40
  const bottom = 70
  const plotW = width - left - right
  const plotH = height - top - bottom
  const xs = chart.series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = chart.series.flatMap((s) => s.points.map((p) => p[1]))
  const xMax = niceMax(Math.max(...xs, 1))
  const yMax = niceMax(Math.max(...ys, chart.goal?.value ?? 0))
  const x = (v: number) => left + (v / xMax) * plotW
  const y = (v: number) => top + plotH - (v / yMax) * plotH
  const out = frame({ width, height, left, top, plotW, plotH, title: chart.title, yLabel: chart.yLabel, yMax, y })
  out.push(`<text x="${left + plotW / 2}" y="${top + plotH + 32}" text-anchor="middle">${escape(chart.xLabel)}</text>`)
  for (const t of ticks(xMax)) out.push(`<text x="${x(t)}" y="${top + plotH + 16}" text-anchor="middle">${label(t)}</text>`)
  chart.series.forEach((s, i) => {
    const d = s.points.map((p, k) => `${k === 0 ? "M" : "L"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")
    out.push(`<path d="${d}" fill="none" stroke="${palette[i % palette.length]}" stroke-width="2"/>`)
    const lx = left + i * 190
    out.push(`<rect x="${lx}" y="${height - 20}" width="10" height="10" fill="${palette[i % palette.length]}"/>`)
    out.push(`<text x="${lx + 14}" y="${height - 11}">${escape(s.name)}</text>`)
  })
  if (chart.goal !== undefined) out.push(...goalLine(chart.goal, left, plotW, y))
  out.push("</svg>")
  return `${out.join("\n")}\n`
}
