// The demo's loss chart: every label inside the picture and clear of every other label.
import { describe, expect, it } from 'vitest'
import { lossChart, textWidth } from '../../examples/chart.js'

interface Box {
  text: string
  x0: number
  x1: number
  y0: number
  y1: number
}

/** Text boxes of an SVG made by lossChart (12 px text: 12 high, baseline at y), rotation aside. */
function boxes(svg: string): Box[] {
  const out: Box[] = []
  for (const m of svg.matchAll(/<text x="([\d.]+)" y="([\d.]+)"([^>]*)>([^<]*)<\/text>/g)) {
    if (m[3]!.includes('rotate')) continue
    const x = Number(m[1])
    const y = Number(m[2])
    const size = /font-size="(\d+)"/.exec(m[3]!)?.[1] ? 16 : 12
    const w = textWidth(m[4]!) * (size / 12)
    const anchor = /text-anchor="(\w+)"/.exec(m[3]!)?.[1] ?? 'start'
    const x0 = anchor === 'end' ? x - w : anchor === 'middle' ? x - w / 2 : x
    out.push({ text: m[4]!, x0, x1: x0 + w, y0: y - size, y1: y + 2 })
  }
  return out
}

const overlap = (a: Box, b: Box): boolean => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1

describe('loss chart', () => {
  it('keeps every label inside the chart and off the legend and each other, with many preemptions near the end', () => {
    const history = Array.from({ length: 10 }, (_, i) => 2 / (i + 1))
    const marks = [
      ...[8.9, 9.2, 9.5, 9.7, 9.95].map((at) => ({ at, kind: 'preempt' as const, label: 'SIGKILL' })),
      ...[1.05, 1.1, 4.5].map((at) => ({ at, kind: 'preempt' as const, label: 'SIGTERM' })),
      { at: 2, kind: 'resume' as const },
    ]
    const svg = lossChart([
      { name: 'uninterrupted', history, marks: [] },
      { name: 'preempted and resumed', history, marks },
    ])
    const W = Number(/width="(\d+)"/.exec(svg)![1])
    const b = boxes(svg)
    expect(b.filter((x) => x.text === 'SIGKILL')).toHaveLength(5)
    for (const x of b) {
      expect(x.x0, x.text).toBeGreaterThanOrEqual(0)
      expect(x.x1, x.text).toBeLessThanOrEqual(W)
    }
    // Axis tick labels are far apart by construction; legend entries and preemption labels must
    // not overlap anything.
    const free = b.filter((x) => !/^[\d.]+$/.test(x.text))
    for (let i = 0; i < free.length; i++) for (let j = i + 1; j < free.length; j++) expect(overlap(free[i]!, free[j]!), `${free[i]!.text} / ${free[j]!.text}`).toBe(false)
  })
})
