// Memory and descriptor bounds, each case in a fresh process so its peak RSS is its own:
// - writeAsync in a loop for fixed, varying and growing state sizes, against the bound the
//   Checkpointer promises (two snapshot buffers of the largest state, plus the state itself);
// - save(dir) and restore(dir) of 10,000 small files: peak descriptors and RSS.
// `npm run bench` runs it; `node dist/bench/memory.js --case grow` runs one case.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checkpointer } from '../src/index.js'
import { fmtSpread, spread, Table, times } from './stats.js'

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

async function manyFiles(): Promise<void> {
  const n = 10_000
  const src = mkdtempSync(path.join(tmpdir(), 'tp-bench-files-'))
  for (let d = 0; d < 100; d++) {
    mkdirSync(path.join(src, `d${d}`))
    for (let f = 0; f < n / 100; f++) writeFileSync(path.join(src, `d${d}`, `f${f}.txt`), Buffer.alloc(1024, d + f))
  }
  const cp = await Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-bench-store-')), { repro: false, onWarning: () => {} })
  const base = process.memoryUsage().rss
  let s = sampler()
  let t = performance.now()
  await cp.save(src)
  const save = { ms: performance.now() - t, fds: s.peakFds(), extraMiB: (s.peakRss() - base) / MiB }
  s.stop()
  s = sampler()
  t = performance.now()
  await cp.restore(mkdtempSync(path.join(tmpdir(), 'tp-bench-out-')))
  const restore = { ms: performance.now() - t, fds: s.peakFds(), extraMiB: (s.peakRss() - base) / MiB }
  s.stop()
  console.log(JSON.stringify({ case: `save/restore ${n} files of 1 KiB`, save, restore }))
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
  for (const c of Array.from({ length: reps }, () => ['fixed', 'varying', 'growing', 'files']).flat()) {
    const r = spawnSync(process.execPath, [me, '--case', c], { encoding: 'utf8' })
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
      const sv = o.save as { ms: number; fds: number; extraMiB: number }
      const rs = o.restore as { ms: number; fds: number; extraMiB: number }
      console.log(
        `  ${o.case}: save ${(sv.ms / 1000).toFixed(1)} s, peak ${sv.fds} fds, +${sv.extraMiB.toFixed(0)} MiB; restore ${(rs.ms / 1000).toFixed(1)} s, peak ${rs.fds} fds, +${rs.extraMiB.toFixed(0)} MiB`,
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
    const fields = new Map<string, number[]>()
    for (const o of runs) for (const [k, v] of leaves(o)) (fields.get(k) ?? fields.set(k, []).get(k)!).push(v)
    for (const [k, xs] of fields) {
      const unit = k.endsWith('ms') ? (x: number) => `${(x / 1000).toFixed(2)} s` : k.endsWith('MiB') ? (x: number) => `${x.toFixed(0)} MiB` : (x: number) => x.toFixed(0)
      table.add({ what: `${name}: ${k}`, ours: fmtSpread(xs, unit), baseline: '', ratio: '', goal: '' })
    }
  }
  table.print([`Each case ${reps} times, each time in a fresh process; median (min–max) over those runs.`])
}
