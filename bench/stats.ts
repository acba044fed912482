// What every benchmark file prints: medians with min–max, ratios paired repetition by repetition,
// and one markdown table at the end that can be pasted into the README.
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

export const MiB = 1024 * 1024

export const argOf = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
export const numArg = (name: string, dflt: number): number => Number(argOf(name) ?? dflt)
export const flag = (name: string): boolean => process.argv.includes(`--${name}`)

/** How this benchmark was started, to print beside its results. */
export function commandLine(): string {
  return `node ${path.relative(process.cwd(), process.argv[1] ?? '')} ${process.argv.slice(2).join(' ')}`.trim()
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export interface Spread {
  median: number
  min: number
  max: number
  n: number
}
export const spread = (xs: number[]): Spread => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length })

/** Student's t for a two-sided 95 % interval with `df` degrees of freedom. */
export function t95(df: number): number {
  const table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086]
  return df <= 0 ? Number.NaN : df <= table.length ? table[df - 1]! : df <= 30 ? 2.05 : df <= 60 ? 2.0 : 1.98
}

/** Mean and 95 % confidence interval of the mean (t distribution). */
export function meanCi(xs: number[]): { mean: number; lo: number; hi: number } {
  const n = xs.length
  const mean = xs.reduce((a, b) => a + b, 0) / n
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, n - 1))
  const h = (t95(n - 1) * sd) / Math.sqrt(n)
  return { mean, lo: mean - h, hi: mean + h }
}

export const time = async (fn: () => unknown): Promise<number> => {
  const t = performance.now()
  await fn()
  return performance.now() - t
}

export type Unit = (x: number) => string
export const ms: Unit = (x) => (x >= 100 ? `${x.toFixed(0)} ms` : `${x.toFixed(1)} ms`)
export const sec: Unit = (x) => `${x.toFixed(2)} s`
export const mibs =
  (bytes: number): Unit =>
  (x) =>
    `${(bytes / MiB / (x / 1000)).toFixed(0)} MiB/s`
export const times: Unit = (x) => `${x.toFixed(2)}×`
export const pct: Unit = (x) => `${(x * 100).toFixed(1)} %`
export const mib: Unit = (x) => `${(x / MiB).toFixed(1)} MiB`

/** "median (min–max)" of xs, in the unit given; a throughput unit turns the ms order around. */
export function fmtSpread(xs: number[], unit: Unit): string {
  const s = spread(xs)
  const lo = unit(s.min)
  const hi = unit(s.max)
  // Rates are faster for fewer ms: show the range low to high in the printed unit.
  const [a, b] = parseFloat(lo) <= parseFloat(hi) ? [lo, hi] : [hi, lo]
  return s.n > 1 ? `${unit(s.median)} (${a.replace(/ .*$/, '')}–${b})` : unit(s.median)
}

export interface Row {
  what: string
  ours: string
  baseline: string
  ratio: string
  goal: string
  /** Whether the ratio's median meets the goal (undefined: no goal). */
  met?: boolean | undefined
}

/**
 * The rows of one benchmark file: printed as they are measured, and once more as a markdown
 * table at the end (also written to $BENCH_TABLE_DIR/<name>.md when that is set).
 */
export class Table {
  readonly rows: Row[] = []
  constructor(
    readonly name: string,
    readonly header: string,
  ) {}

  add(r: Row): void {
    this.rows.push(r)
    const verdict = r.met === undefined ? '' : r.met ? ' ok' : ' MISSES'
    const parts = [`ours ${r.ours}`, r.baseline && `baseline ${r.baseline}`, r.ratio && `ratio ${r.ratio}`, r.goal && `goal ${r.goal}`].filter(Boolean)
    console.log(`  ${r.what}: ${parts.join('; ')}${verdict}`)
  }

  /**
   * A paired row: `ours[i]` and `base[i]` come from the same repetition; the ratio of each pair is
   * `ratio(ours[i], base[i])`, and its median and min–max are what the goal is checked against.
   */
  paired(
    what: string,
    ours: number[],
    base: number[],
    o: { unit: Unit; baseUnit?: Unit; ratio: (a: number, b: number) => number; goal: string; ok?: (r: number) => boolean },
  ): number[] {
    const ratios = ours.map((x, i) => o.ratio(x, base[i]!))
    const r = spread(ratios)
    this.add({
      what,
      ours: fmtSpread(ours, o.unit),
      baseline: fmtSpread(base, o.baseUnit ?? o.unit),
      ratio: `${times(r.median)} (${times(r.min)}–${times(r.max)})`,
      goal: o.goal,
      // Judged on the median as printed (two decimals), so a row never reads 0.90× and "missed".
      met: o.ok?.(Number(r.median.toFixed(2))),
    })
    return ratios
  }

  print(notes: string[] = []): void {
    const lines = [
      '',
      `### ${this.header}`,
      '',
      `Command: \`${commandLine()}\``,
      ...notes.map((n) => `${n}`),
      '',
      '| benchmark | taskpoint median (min–max) | baseline median (min–max) | ratio median (min–max, paired per rep) | goal |',
      '|---|---|---|---|---|',
      ...this.rows.map((r) => `| ${r.what} | ${r.ours} | ${r.baseline} | ${r.ratio} | ${r.goal}${r.met === false ? ' (missed)' : ''} |`),
    ]
    console.log(lines.join('\n'))
    const dir = process.env.BENCH_TABLE_DIR
    if (dir) {
      mkdirSync(dir, { recursive: true })
      writeFileSync(path.join(dir, `${this.name}.md`), `${lines.join('\n')}\n`)
    }
  }
}
