// An SVG picture of jobs moving between workers over time: one row per worker slot, one bar per
// run coloured by job, ends marked by how the run ended. No dependency.
import type { Run } from './analyze.js'

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

export function timelineSvg(runs: Run[], title: string): string {
  const t0 = Math.min(...runs.map((r) => r.start))
  const t1 = Math.max(...runs.map((r) => r.end))
  const slots = [...new Set(runs.map((r) => r.worker.split('.')[0]!))].sort()
  const jobs = [...new Set(runs.map((r) => r.job))].sort()
  const W = 900
  const rowH = 34
  const m = { l: 70, r: 20, t: 48, b: 70 }
  const H = m.t + slots.length * rowH + m.b
  const x = (t: number): number => m.l + ((t - t0) / Math.max(1, t1 - t0)) * (W - m.l - m.r)
  const esc = (s: string): string => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`)
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ]
  slots.forEach((s, i) => void parts.push(`<text x="${m.l - 8}" y="${m.t + i * rowH + rowH / 2 + 4}" text-anchor="end">${esc(s)}</text>`))
  for (let s = 0; s <= (t1 - t0) / 1000; s += Math.max(1, Math.ceil((t1 - t0) / 1000 / 10))) {
    const xx = x(t0 + s * 1000)
    parts.push(`<line x1="${xx}" x2="${xx}" y1="${m.t}" y2="${H - m.b}" stroke="#eee"/><text x="${xx}" y="${H - m.b + 16}" text-anchor="middle">${s}s</text>`)
  }
  for (const r of runs) {
    const row = slots.indexOf(r.worker.split('.')[0]!)
    const y = m.t + row * rowH + 5
    const color = COLORS[jobs.indexOf(r.job) % COLORS.length]
    const w = Math.max(2, x(r.end) - x(r.start))
    parts.push(
      `<rect x="${x(r.start)}" y="${y}" width="${w}" height="${rowH - 10}" fill="${color}" opacity="0.85"><title>${esc(`${r.job} on ${r.worker}: steps ${r.fromStep}→${r.reachedStep}, ${r.how}`)}</title></rect>`,
    )
    if (w > 40) parts.push(`<text x="${x(r.start) + 4}" y="${y + rowH / 2}" fill="white" font-size="11">${esc(r.job)}</text>`)
    const mark = r.how === 'killed' ? '✕' : r.how === 'preempted' ? '⏸' : r.how === 'completed' ? '✓' : r.how === 'failed' || r.how === 'permanent' ? '!' : ''
    if (mark) parts.push(`<text x="${x(r.end) + 2}" y="${y + rowH / 2 + 2}" font-size="13" fill="${r.how === 'killed' ? '#c00' : '#333'}">${mark}</text>`)
  }
  const ly = H - 30
  jobs.forEach(
    (j, i) =>
      void parts.push(
        `<rect x="${m.l + i * 110}" y="${ly}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/><text x="${m.l + i * 110 + 16}" y="${ly + 10}">${esc(j)}</text>`,
      ),
  )
  parts.push(
    `<text x="${W - m.r}" y="${H - 8}" text-anchor="end" fill="#555">⏸ SIGTERM: saved, back to the queue   ✕ SIGKILL: recovered by the stalled checker   ✓ completed</text>`,
  )
  parts.push('</svg>')
  return parts.join('\n')
}
