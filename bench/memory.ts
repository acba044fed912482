// Memory and descriptor bounds, each case in a fresh process so its peak RSS is its own:
// - writeAsync in a loop for fixed, varying and growing state sizes, against the bound the
//   Checkpointer promises (two snapshot buffers of the largest state, plus the state itself);
// - save(dir) and restore(dir) of 10,000 small files: time against tar side by side (alternating
//   order, `--reps N`, default 5), peak descriptors and RSS.
// `npm run bench` runs it; `node dist/bench/memory.js --case files --reps 9` runs one case.
import { spawnSync } from 'node:child_process'
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checkpointer } from '../src/index.js'
import { fmtSpread, Table, times } from './stats.js'

const MiB = 1024 * 1024
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}

function sampler(): { peakRss: () => number; peakFds: () => number; stop: () => void } {
  let rss = process.memoryUsage().rss
  let fds = 0
  const tick = (): void => {
    rss = Math.max(rss, process.memoryUsage().rss)
    try {
      fds = Math.max(fds, readdirSync('/proc/self/fd').length)
    } catch {
      // not Linux: descriptors are not reported
    }
  }
  const t = setInterval(tick, 2)
  return { peakRss: () => (tick(), rss), peakFds: () => fds, stop: () => clearInterval(t) }
}

async function writeLoop(kind: string): Promise<void> {
  const largest = Number(arg('mib') ?? 8) * MiB
  const state = new Uint8Array(largest).fill(1)
  const dir = mkdtempSync(path.join(tmpdir(), 'tp-bench-mem-'))
  const cp = await Checkpointer.open(dir, { repro: false, onWarning: () => {} })
  // The baseline is a process that has committed once (hashing workers started, code loaded):
  // what the loop adds on top of it is what the snapshot buffers cost.
  cp.writeAsync(state, { step: 0 })
  await cp.flush()
  const base = process.memoryUsage().rss
  const s = sampler()
  const calls = 3000
  for (let i = 0; i < calls; i++) {
    const size =
      kind === 'fixed'
        ? largest
        : kind === 'varying'
          ? Math.floor(MiB / 2 + (((i * 7919) % 1000) / 1000) * (largest - MiB / 2))
          : Math.floor(MiB / 2 + (i / (calls - 1)) * (largest - MiB / 2))
    state[i % size] = i & 255
    cp.writeAsync(state.subarray(0, size), { step: i + 1 })
    // A tight loop: the commit pump gets a turn only every 20 calls.
    if (i % 20 === 0) await new Promise((r) => setImmediate(r))
  }
  await cp.close()
  const peak = s.peakRss()
  s.stop()
  const bound = 2 * largest
  console.log(JSON.stringify({ case: `writeAsync ${kind} (0.5-8 MiB, ${calls} calls)`, extraMiB: (peak - base) / MiB, boundMiB: bound / MiB }))
}

/** Median, min and max of a list of numbers. */
function spread(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return { median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s.at(-1)! }
}

/** Runs a command to completion; throws when it fails. */
function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`)
}

/**
 * save(dir) and restore of 10,000 files of 1 KiB against `tar cf` + fsync of the archive and
 * `tar xf` of it, side by side: each repetition gives every file new bytes, then runs both (the
 * order alternates, so neither always gets the warmer cache), restoring and extracting into fresh
 * directories. Peak descriptors and RSS are sampled over our runs.
 */
async function manyFiles(): Promise<void> {
  const n = 10_000
  const reps = Number(arg('reps') ?? 5)
  const src = mkdtempSync(path.join(tmpdir(), 'tp-bench-files-'))
  for (let d = 0; d < 100; d++) mkdirSync(path.join(src, `d${d}`))
  // New bytes in every file before each repetition: a save that deduplicated would write nothing.
  const fill = (rep: number): void => {
    for (let d = 0; d < 100; d++) for (let f = 0; f < n / 100; f++) writeFileSync(path.join(src, `d${d}`, `f${f}.txt`), Buffer.alloc(1024, `${rep}/${d}/${f}`))
  }
  const work = mkdtempSync(path.join(tmpdir(), 'tp-bench-work-'))
  const peak = { save: { fds: 0, rss: 0 }, restore: { fds: 0, rss: 0 } }
  const times = { save: [] as number[], restore: [] as number[], tarC: [] as number[], tarX: [] as number[] }
  // Shared memory (chunk and pack buffers) is not garbage-collection pressure, so buffers of earlier
  // repetitions could still be counted: each run starts after a full collection (--expose-gc,
  // which the parent passes) and its peak is taken over the RSS at its start.
  const gc = (globalThis as { gc?: () => void }).gc ?? (() => {})
  // One store and writer throughout, as a job that saves a directory now and then: its first
  // commit (claiming the location) is part of the uncounted warm-up.
  const cp = await Checkpointer.open(path.join(work, 'store'), { repro: false, onWarning: () => {} })
  const ours = async (rep: number): Promise<void> => {
    gc()
    let base = process.memoryUsage().rss
    let s = sampler()
    let t = performance.now()
    await cp.save(src)
    times.save.push(performance.now() - t)
    peak.save = { fds: Math.max(peak.save.fds, s.peakFds()), rss: Math.max(peak.save.rss, s.peakRss() - base) }
    s.stop()
    gc()
    base = process.memoryUsage().rss
    s = sampler()
    t = performance.now()
    await cp.restore(path.join(work, `out${rep}`))
    times.restore.push(performance.now() - t)
    peak.restore = { fds: Math.max(peak.restore.fds, s.peakFds()), rss: Math.max(peak.restore.rss, s.peakRss() - base) }
    s.stop()
  }
  const tar = (rep: number): void => {
    const archive = path.join(work, `a${rep}.tar`)
    let t = performance.now()
    run('tar', ['cf', archive, '-C', src, '.'])
    const fd = openSync(archive, 'r')
    fsyncSync(fd)
    closeSync(fd)
    times.tarC.push(performance.now() - t)
    const out = path.join(work, `tar-out${rep}`)
    mkdirSync(out)
    t = performance.now()
    run('tar', ['xf', archive, '-C', out])
    times.tarX.push(performance.now() - t)
  }
  // One uncounted round first: hashing threads start, code is compiled, the location is claimed.
  fill(-1)
  await ours(-1)
  tar(-1)
  for (const t of Object.values(times)) t.length = 0
  peak.save = { fds: 0, rss: 0 }
  peak.restore = { fds: 0, rss: 0 }
  for (let rep = 0; rep < reps; rep++) {
    fill(rep)
    if (rep % 2 === 0) {
      tar(rep)
      await ours(rep)
    } else {
      await ours(rep)
      tar(rep)
    }
  }
  await cp.close()
  rmSync(work, { recursive: true, force: true })
  rmSync(src, { recursive: true, force: true })
  const ratio = (a: number[], b: number[]) => spread(a.map((x, i) => x / b[i]!))
  console.log(
    JSON.stringify({
      case: `save/restore ${n} files of 1 KiB vs tar, ${reps} reps`,
      save: { ...spread(times.save), fds: peak.save.fds, extraMiB: peak.save.rss / MiB },
      restore: { ...spread(times.restore), fds: peak.restore.fds, extraMiB: peak.restore.rss / MiB },
      tarCreate: spread(times.tarC),
      tarExtract: spread(times.tarX),
      saveRatio: ratio(times.save, times.tarC),
      restoreRatio: ratio(times.restore, times.tarX),
    }),
  )
}

const one = arg('case')
if (one === 'fixed' || one === 'varying' || one === 'growing') await writeLoop(one)
else if (one === 'files') await manyFiles()
else {
  const reps = Number(arg('reps') ?? 3)
  console.log(`\n== memory and descriptors (each case in a fresh process, ${reps} times) ==`)
  const me = fileURLToPath(import.meta.url)
  const all: Record<string, Record<string, unknown>[]> = {}
  // Cases rotate within each repetition: min–max over repetitions come from separate processes.
  // The files case repeats itself inside its process (and prints its own min–max): once is enough.
  for (const c of [...Array.from({ length: reps }, () => ['fixed', 'varying', 'growing']).flat(), 'files']) {
    const r = spawnSync(process.execPath, ['--expose-gc', me, '--case', c], { encoding: 'utf8' })
    if (r.status !== 0) {
      console.log(`  ${c}: failed\n${r.stderr}`)
      process.exitCode = 1
      continue
    }
    const o = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>
    ;(all[c] ??= []).push(o)
    if ('boundMiB' in o) {
      const extra = o.extraMiB as number
      console.log(
        `  ${o.case}: peak RSS +${extra.toFixed(0)} MiB over one committed write (bound: 2 snapshot buffers = ${o.boundMiB} MiB) ${extra <= (o.boundMiB as number) ? 'within' : 'OVER'}`,
      )
    } else {
      type Spread = { median: number; min: number; max: number }
      const ms = (x: Spread): string => `${x.median.toFixed(0)} ms (${x.min.toFixed(0)}-${x.max.toFixed(0)})`
      const times = (x: Spread): string => `${x.median.toFixed(2)}x (${x.min.toFixed(2)}-${x.max.toFixed(2)}x)`
      const sv = o.save as Spread & { fds: number; extraMiB: number }
      const rs = o.restore as Spread & { fds: number; extraMiB: number }
      console.log(`  ${o.case} (median, min-max):`)
      console.log(
        `    save ${ms(sv)}, peak ${sv.fds} fds, +${sv.extraMiB.toFixed(0)} MiB; tar cf + fsync ${ms(o.tarCreate as Spread)}; per-rep ratio ${times(o.saveRatio as Spread)} (goal <= 3x)`,
      )
      console.log(
        `    restore ${ms(rs)}, peak ${rs.fds} fds, +${rs.extraMiB.toFixed(0)} MiB; tar xf ${ms(o.tarExtract as Spread)}; per-rep ratio ${times(o.restoreRatio as Spread)} (goal <= 3x)`,
      )
    }
  }
  summarize(all, reps)
}

/** One table over all repetitions: each case's numeric figures, median (min–max). */
function summarize(all: Record<string, Record<string, unknown>[]>, reps: number): void {
  const table = new Table('memory', 'Memory and descriptors')
  const leaves = (o: unknown, prefix = ''): [string, number][] =>
    typeof o === 'number' ? [[prefix, o]] : o && typeof o === 'object' ? Object.entries(o).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k)) : []
  for (const runs of Object.values(all)) {
    const name = String(runs[0]?.case ?? '')
    if (runs.every((o) => 'boundMiB' in o)) {
      const extra = runs.map((o) => o.extraMiB as number)
      const bound = runs[0]!.boundMiB as number
      const r = spread(extra.map((x) => x / bound))
      table.add({
        what: `${name}: peak RSS over a process that committed once, vs the bound (2 snapshot buffers)`,
        ours: fmtSpread(extra, (x) => `+${x.toFixed(0)} MiB`),
        baseline: `${bound} MiB`,
        ratio: `${times(r.median)} (${times(r.min)}–${times(r.max)})`,
        goal: '≤ 1×',
        met: r.max <= 1,
      })
      continue
    }
    // Figures the case summarised itself ({ median, min, max }) as they are; other numbers over runs.
    const fields = new Map<string, number[]>()
    const unitOf = (k: string) =>
      /ratio/i.test(k) ? times : k.endsWith('MiB') ? (x: number) => `${x.toFixed(0)} MiB` : /fds/.test(k) ? (x: number) => x.toFixed(0) : (x: number) => `${x.toFixed(0)} ms`
    for (const o of runs) {
      for (const [k, v] of Object.entries(o)) {
        const m = v as { median?: unknown; min?: unknown; max?: unknown }
        if (runs.length === 1 && m && typeof m.median === 'number' && typeof m.min === 'number' && typeof m.max === 'number') {
          const u = unitOf(k)
          table.add({ what: `${name}: ${k}`, ours: `${u(m.median)} (${u(m.min)}–${u(m.max)})`, baseline: '', ratio: '', goal: '' })
          for (const [k2, v2] of Object.entries(v as object))
            if (typeof v2 === 'number' && !['median', 'min', 'max'].includes(k2)) (fields.get(`${k}.${k2}`) ?? fields.set(`${k}.${k2}`, []).get(`${k}.${k2}`)!).push(v2)
        } else for (const [k2, x] of leaves(v, k)) (fields.get(k2) ?? fields.set(k2, []).get(k2)!).push(x)
      }
    }
    for (const [k, xs] of fields) table.add({ what: `${name}: ${k}`, ours: fmtSpread(xs, unitOf(k)), baseline: '', ratio: '', goal: '' })
  }
  table.print([
    `The writeAsync cases ${reps} times each, each time in a fresh process; median (min–max) over those runs. The files case once, with the repetitions and min–max it measures itself.`,
  ])
}
