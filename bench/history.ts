// Cost of open, commit and latest() against the number of checkpoints already stored (issue 12,
// item 1), on local disk and the S3 test server, sizes side by side in one run. Histories are built
// by writing manifests directly (bench/plant.ts). Each repetition measures every size in turn, so a
// ratio is paired within one repetition; min–max are over repetitions.
//   node dist/bench/history.js [--reps 5] [--sizes 10,1000,5000]   (npm run bench runs it too)
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Checkpointer, type Storage } from '../src/index.js'
import { LocalStorage } from '../src/storage/local.js'
import { listManifestNames } from '../src/checkpoint/reader.js'
import { S3Storage } from '../src/storage/s3.js'
import { startTestServers } from '../test/helpers/servers.js'
import { plantHistory } from './plant.js'
import { Table, times } from './stats.js'

const argOf = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const REPS = Number(argOf('reps') ?? 5)
const CACHE_REPS = Number(argOf('cache-reps') ?? 3)
const SIZES = (argOf('sizes') ?? '10,1000,5000').split(',').map(Number)
const table = new Table('history', `Cost against history: ${SIZES.at(-1)} vs ${SIZES[0]} stored checkpoints`)
const quiet = { repro: false as const, onWarning: () => {} }
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
const OPS = ['open', 'first commit', 'commit', 'latest()', 'read()', 'full listing (reference)'] as const
type Op = (typeof OPS)[number]

const time = async (fn: () => Promise<unknown>): Promise<number> => {
  const t = performance.now()
  await fn()
  return performance.now() - t
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const range = (xs: number[], f: (x: number) => string): string => `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`
const ms = (x: number): string => `${x.toFixed(1)} ms`
const ratio = (x: number): string => `${x.toFixed(2)}×`

/** One repetition at one size: a new writer opens, commits twice; a new reader asks for the latest and reads it. */
async function once(storage: Storage, step: number): Promise<Record<Op, number>> {
  let cp!: Checkpointer
  const out = {} as Record<Op, number>
  out.open = await time(async () => (cp = await Checkpointer.open(storage, quiet)))
  out['first commit'] = await time(() => cp.write(Buffer.from(`step ${step}`)))
  out.commit = await time(() => cp.write(Buffer.from(`step ${step + 1}`)))
  await cp.close()
  const reader = await Checkpointer.open(storage, quiet)
  out['latest()'] = await time(() => reader.latest())
  const fresh = await Checkpointer.open(storage, quiet)
  out['read()'] = await time(() => fresh.read())
  out['full listing (reference)'] = await time(() => listManifestNames(storage))
  return out
}

async function backend(name: string, open: (size: number) => Storage): Promise<void> {
  const stores = new Map<number, Storage>()
  for (const size of SIZES) {
    const s = open(size)
    const t = performance.now()
    await plantHistory(s, size)
    // A writer of this version has committed once, as in any location it writes to: the hint exists.
    const cp = await Checkpointer.open(s, quiet)
    await cp.write(Buffer.from('warm'))
    await cp.close()
    console.log(`  ${name}: ${size} checkpoints stored in ${((performance.now() - t) / 1000).toFixed(1)} s`)
    stores.set(size, s)
  }
  const runs = new Map<number, Record<Op, number>[]>(SIZES.map((n) => [n, []]))
  // One unrecorded round first: the first requests of a process pay for connections and JIT.
  for (const size of SIZES) await once(stores.get(size)!, 999_000)
  // The order of sizes rotates between repetitions, so no size always runs first or last.
  for (let r = 0; r < REPS; r++) {
    for (let j = 0; j < SIZES.length; j++) {
      const size = SIZES[(r + j) % SIZES.length]!
      runs.get(size)!.push(await once(stores.get(size)!, 1_000_000 + 10 * r))
    }
  }
  const small = SIZES[0]!
  console.log(
    `\n  ${name}: median (min–max) of ${REPS}; ratio = median over median at ${small} checkpoints, with the min–max of the ratios paired per repetition (goal ≤ 1.5× for open, commit, latest())`,
  )
  console.log(
    `  | operation | ${SIZES.map((n) => `${n} stored`).join(' | ')} | ${SIZES.slice(1)
      .map((n) => `${n} / ${small}`)
      .join(' | ')} |`,
  )
  console.log(
    `  |---|${SIZES.map(() => '---').join('|')}|${SIZES.slice(1)
      .map(() => '---')
      .join('|')}|`,
  )
  for (const op of OPS) {
    const cells = SIZES.map((n) =>
      range(
        runs.get(n)!.map((x) => x[op]),
        ms,
      ),
    )
    const med = (n: number): number => median(runs.get(n)!.map((x) => x[op]))
    const paired = (n: number): number[] => runs.get(n)!.map((x, i) => x[op] / runs.get(small)![i]![op])
    const ratios = SIZES.slice(1).map((n) => `${ratio(med(n) / med(small))} (paired ${ratio(Math.min(...paired(n)))}–${ratio(Math.max(...paired(n)))})`)
    console.log(`  | ${op} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`)
    const big = SIZES.at(-1)!
    if (big !== small) {
      const p = paired(big)
      const goal = op === 'open' || op === 'commit' || op === 'latest()' || op === 'first commit' ? '≤ 1.5×' : ''
      table.add({
        what: `${name}: ${op}, ${big} vs ${small} stored`,
        ours: cells[SIZES.length - 1]!,
        baseline: cells[0]!,
        ratio: `${times(med(big) / med(small))} (${times(Math.min(...p))}–${times(Math.max(...p))})`,
        goal,
        met: goal ? med(big) / med(small) <= 1.5 : undefined,
      })
    }
  }
  for (const s of stores.values()) await s.close()
}

/** Restore from S3 twice through the local chunk cache: what the second one downloads. */
async function cacheRuns(storage: Storage): Promise<void> {
  const MiB = 1024 * 1024
  const state = new Uint8Array(64 * MiB)
  for (let o = 0; o < state.byteLength; o += 65536) state.set(randomBytes(65536), o)
  await (await Checkpointer.open(storage, quiet)).write(state)
  let downloaded = 0
  const counted = Object.create(storage) as Storage
  counted.get = async (key, o) => {
    const out = await storage.get(key, o)
    if (key.startsWith('chunks/')) downloaded += out.byteLength
    return out
  }
  const cacheDir = mkdtempSync(path.join(tmpdir(), 'tp-cache-'))
  const out = mkdtempSync(path.join(tmpdir(), 'tp-restore-'))
  const runs = ['no cache', 'first (cache empty)', 'second (cache warm)', 'third (cache warm)']
  const got = new Map<string, { ms: number[]; mib: number[] }>(runs.map((r) => [r, { ms: [], mib: [] }]))
  try {
    // Each repetition starts from an empty cache directory, so "first" always fills it.
    for (let rep = 0; rep < CACHE_REPS; rep++) {
      rmSync(cacheDir, { recursive: true, force: true })
      for (const run of runs) {
        downloaded = 0
        const cp = await Checkpointer.open(counted, { ...quiet, ...(run === 'no cache' ? {} : { chunkCache: { dir: cacheDir } }) })
        const t = await time(() => cp.restore(out))
        got.get(run)!.ms.push(t)
        got.get(run)!.mib.push(downloaded / MiB)
      }
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true })
    rmSync(out, { recursive: true, force: true })
  }
  const rows = runs.map((run) => {
    const g = got.get(run)!
    return `  | ${run} | ${range(g.ms, ms)} | ${range(g.mib, (x) => `${x.toFixed(1)} MiB`)} |`
  })
  console.log(
    `\n  s3: restore of a 64 MiB checkpoint through the local chunk cache (chunkCache option), median (min–max) of ${CACHE_REPS}\n  | restore | time | downloaded from the store |\n  |---|---|---|\n${rows.join('\n')}`,
  )
  const none = got.get('no cache')!.ms
  for (const run of runs.slice(1)) {
    const g = got.get(run)!
    const r = g.ms.map((x, i) => x / none[i]!)
    table.add({
      what: `s3: 64 MiB restore through the chunk cache, ${run} (${range(g.mib, (x) => `${x.toFixed(1)} MiB`)} downloaded) vs no cache`,
      ours: range(g.ms, ms),
      baseline: range(none, ms),
      ratio: `${times(median(g.ms) / median(none))} (${times(Math.min(...r))}–${times(Math.max(...r))})`,
      goal: '',
    })
  }
}

async function main(): Promise<void> {
  console.log(`taskpoint history benchmark: open, commit, latest() at ${SIZES.join(' / ')} stored checkpoints`)
  const base = mkdtempSync(path.join(tmpdir(), 'tp-history-'))
  try {
    await backend('local', (n) => new LocalStorage(path.join(base, `h${n}`)))
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
  const servers = await startTestServers('s3')
  try {
    const s3cfg = { endpoint: servers.s3!, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }
    const client = new S3Client(s3cfg)
    await client.send(new CreateBucketCommand({ Bucket: 'history' }))
    client.destroy()
    await backend('s3', (n) => new S3Storage('history', `h${n}`, { clientConfig: s3cfg }))
    await cacheRuns(new S3Storage('history', 'cache', { clientConfig: s3cfg }))
  } finally {
    await servers.stop()
  }
  table.print([
    `${REPS} repetitions, sizes in rotating order within each; ratios paired per repetition (min–max). Chunk cache: ${CACHE_REPS} repetitions, each from an empty cache.`,
  ])
}

await main()
