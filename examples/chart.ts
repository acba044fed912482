// A small SVG line chart of loss per epoch, with preemptions and resumes marked. No dependency:
// the chart is a handful of lines and polylines.

export interface ChartRun {
  name: string
  /** Loss per epoch, epoch 1 first. */
  history: number[]
  /** Positions in epochs (fractional: 2.5 = half-way through epoch 3). */
  marks: { at: number; kind: 'preempt' | 'resume'; label?: string }[]
}

const COLORS = ['#1f77b4', '#ff7f0e']

/** Width of a label at the chart's 12 px sans-serif, generously estimated (no font metrics here). */
export const textWidth = (s: string): number => s.length * 7.2

export function lossChart(runs: ChartRun[], title = 'Training loss per epoch'): string {
  const W = 760
  const H = 440
  const m = { l: 64, r: 24, t: 48, b: 56 }
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16">${esc(title)}</text>`)

  // The legend is a band of its own between the title and the plot, wrapped to the chart's width,
  // so it never covers curves or labels.
  const items: { label: string; draw: (x: number, y: number) => string }[] = runs.map((r, i) => ({
    label: r.name,
    draw: (x, y) => `<line x1="${x}" y1="${y - 4}" x2="${x + 24}" y2="${y - 4}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"${i ? ' stroke-dasharray="7 5"' : ''}/>`,
  }))
  items.push({ label: 'preemption', draw: (x, y) => `<line x1="${x + 12}" y1="${y - 10}" x2="${x + 12}" y2="${y + 2}" stroke="#d62728" stroke-dasharray="4 3"/>` })
  items.push({ label: 'resumed from checkpoint', draw: (x, y) => `<circle cx="${x + 12}" cy="${y - 4}" r="5" fill="#2ca02c"/>` })
  let lx = m.l
  let ly = 46
  for (const it of items) {
    const w = 30 + textWidth(it.label) + 18
    if (lx + w > W - m.r && lx > m.l) [lx, ly] = [m.l, ly + 18]
    out.push(`${it.draw(lx, ly)}<text x="${lx + 30}" y="${ly}">${esc(it.label)}</text>`)
    lx += w
  }
  m.t = ly + 14

  // Preemption labels sit in rows above the plot, each in the first row where it overlaps no other
  // label, kept inside the chart (anchored at its end near the right edge).
  const marks = runs.flatMap((r) => r.marks.filter((mk) => mk.kind === 'preempt'))
  const rows: [number, number][][] = []
  const placed: { x: number; anchor: 'start' | 'end'; row: number; text: string; at: number }[] = []
  const epochs = Math.max(1, ...runs.map((r) => r.history.length))
  const x = (e: number): number => m.l + (e / epochs) * (W - m.l - m.r)
  for (const mk of [...marks].sort((a, b) => a.at - b.at)) {
    const text = mk.label ?? 'preempted'
    const w = textWidth(text)
    const atEnd = x(mk.at) + 3 + w > W - 2
    const from = atEnd ? x(mk.at) - 3 - w : x(mk.at) + 3
    let row = rows.findIndex((spans) => spans.every(([a, b]) => from + w + 4 <= a || from >= b + 4))
    if (row < 0) row = rows.push([]) - 1
    rows[row]!.push([from, from + w])
    placed.push({ x: atEnd ? x(mk.at) - 3 : x(mk.at) + 3, anchor: atEnd ? 'end' : 'start', row, text, at: mk.at })
  }
  const labelTop = m.t
  m.t += rows.length * 14 + (rows.length ? 6 : 0)

  const all = runs.flatMap((r) => r.history).filter(Number.isFinite)
  const yMax = Math.max(...all, 0) * 1.08 || 1
  const y = (v: number): number => H - m.b - (v / yMax) * (H - m.t - m.b)
  // axes and grid
  for (let e = 0; e <= epochs; e++) {
    out.push(`<line x1="${x(e)}" y1="${H - m.b}" x2="${x(e)}" y2="${m.t}" stroke="#eee"/>`)
    out.push(`<text x="${x(e)}" y="${H - m.b + 18}" text-anchor="middle">${e}</text>`)
  }
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5
    out.push(`<line x1="${m.l}" y1="${y(v)}" x2="${W - m.r}" y2="${y(v)}" stroke="#eee"/>`)
    out.push(`<text x="${m.l - 8}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`)
  }
  out.push(`<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#333"/>`)
  out.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="#333"/>`)
  out.push(`<text x="${W / 2}" y="${H - 16}" text-anchor="middle">epoch</text>`)
  out.push(`<text x="16" y="${(m.t + H - m.b) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(m.t + H - m.b) / 2})">loss</text>`)
  // marks
  for (const p of placed) {
    const top = labelTop + p.row * 14
    out.push(`<line x1="${x(p.at)}" y1="${top}" x2="${x(p.at)}" y2="${H - m.b}" stroke="#d62728" stroke-dasharray="4 3"/>`)
    out.push(`<text x="${p.x}" y="${top + 10}" text-anchor="${p.anchor}" fill="#d62728">${esc(p.text)}</text>`)
  }
  for (const r of runs) for (const mk of r.marks) if (mk.kind === 'resume') out.push(`<circle cx="${x(mk.at)}" cy="${H - m.b}" r="5" fill="#2ca02c"/>`)
  // curves: the value for epoch k is drawn at x = k (the end of that epoch)
  runs.forEach((r, i) => {
    const pts = r.history.map((v, k) => `${x(k + 1).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
    const dash = i === 0 ? '' : ' stroke-dasharray="7 5"'
    out.push(`<polyline points="${pts}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="${i === 0 ? 4 : 2}"${dash}/>`)
    r.history.forEach((v, k) => out.push(`<circle cx="${x(k + 1).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${COLORS[i % COLORS.length]}"/>`))
  })
  out.push('</svg>')
  return out.join('\n')
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
}
