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

export function lossChart(runs: ChartRun[], title = 'Training loss per epoch'): string {
  const W = 760
  const H = 420
  const m = { l: 64, r: 20, t: 48, b: 56 }
  const epochs = Math.max(1, ...runs.map((r) => r.history.length))
  const all = runs.flatMap((r) => r.history).filter(Number.isFinite)
  const yMax = Math.max(...all, 0) * 1.08 || 1
  const x = (e: number): number => m.l + (e / epochs) * (W - m.l - m.r)
  const y = (v: number): number => H - m.b - (v / yMax) * (H - m.t - m.b)
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16">${esc(title)}</text>`)
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
  out.push(`<text x="16" y="${H / 2}" text-anchor="middle" transform="rotate(-90 16 ${H / 2})">loss</text>`)
  // marks
  for (const r of runs) {
    for (const mk of r.marks) {
      if (mk.kind === 'preempt') {
        out.push(`<line x1="${x(mk.at)}" y1="${m.t}" x2="${x(mk.at)}" y2="${H - m.b}" stroke="#d62728" stroke-dasharray="4 3"/>`)
        out.push(`<text x="${x(mk.at) + 3}" y="${m.t + 12}" fill="#d62728">${esc(mk.label ?? 'preempted')}</text>`)
      } else {
        out.push(`<circle cx="${x(mk.at)}" cy="${H - m.b}" r="5" fill="#2ca02c"/>`)
      }
    }
  }
  // curves: the value for epoch k is drawn at x = k (the end of that epoch)
  runs.forEach((r, i) => {
    const pts = r.history.map((v, k) => `${x(k + 1).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
    const dash = i === 0 ? '' : ' stroke-dasharray="7 5"'
    out.push(`<polyline points="${pts}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="${i === 0 ? 4 : 2}"${dash}/>`)
    r.history.forEach((v, k) => out.push(`<circle cx="${x(k + 1).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${COLORS[i % COLORS.length]}"/>`))
  })
  // legend
  const lx = W - m.r - 230
  runs.forEach((r, i) => {
    const ly = m.t + 14 + i * 18
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 24}" y2="${ly - 4}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"${i ? ' stroke-dasharray="7 5"' : ''}/>`)
    out.push(`<text x="${lx + 30}" y="${ly}">${esc(r.name)}</text>`)
  })
  const ly = m.t + 14 + runs.length * 18
  out.push(`<line x1="${lx + 12}" y1="${ly - 10}" x2="${lx + 12}" y2="${ly + 2}" stroke="#d62728" stroke-dasharray="4 3"/><text x="${lx + 30}" y="${ly}">preemption</text>`)
  out.push(`<circle cx="${lx + 12}" cy="${ly + 14}" r="5" fill="#2ca02c"/><text x="${lx + 30}" y="${ly + 18}">resumed from checkpoint</text>`)
  out.push('</svg>')
  return out.join('\n')
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
}
