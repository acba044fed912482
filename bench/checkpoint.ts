// Checkpointer benchmarks: every figure is a ratio against a baseline measured side by side in the
// same run, on the same bytes. Run with `npm run bench` (or `npm run bench -- --mib 64` for a quick look).
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { Storage as GcsClient } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pLimit from 'p-limit'
import { Checkpointer, type Storage } from '../src/index.js'
import { GcsStorage } from '../src/storage/gcs.js'
import { S3Storage } from '../src/storage/s3.js'
import { startTestServers } from '../test/helpers/servers.js'

const MiB = 1024 * 1024
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const SIZE = arg('mib', 256) * MiB
const REPS = arg('reps', 3)
const quiet = { repro: false as const, onWarning: () => {} }
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const time = async (fn: () => unknown): Promise<number> => {
  const t = performance.now()
  await fn()
  return performance.now() - t
}
async function best(reps: number, fn: () => Promise<number>): Promise<number> {
  const xs: number[] = []
  for (let i = 0; i < reps; i++) xs.push(await fn())
  return median(xs)
}

export interface Row {
  what: string
  ours: string
  baseline: string
  ratio: string
  goal: string
}
const rows: Row[] = []
const fmtMs = (ms: number): string => `${ms.toFixed(1)} ms`
const fmtRate = (ms: number): string => `${(SIZE / MiB / (ms / 1000)).toFixed(0)} MiB/s`
function row(what: string, ours: string, baseline: string, ratio: number, goal: string): void {
  rows.push({ what, ours, baseline, ratio: `${ratio.toFixed(2)}×`, goal })
  console.log(`  ${what}: ours ${ours}, baseline ${baseline} → ${ratio.toFixed(2)}× (goal ${goal})`)
}

function state(): Uint8Array {
  // Random bytes: nothing for deduplication to find.
  const b = new Uint8Array(SIZE)
  for (let o = 0; o < SIZE; o += 64 * 1024) b.set(randomBytes(Math.min(64 * 1024, SIZE - o)), o)
  return b
}

async function asyncBlocked(label: string, open: () => Promise<Checkpointer>, data: Uint8Array): Promise<void> {
  const cp = await open()
  // Warm: the first call allocates the snapshot buffers; what a training loop pays every step is later calls.
  cp.writeAsync(data, { step: 0 })
  await cp.flush()
  cp.writeAsync(data, { step: 1 })
  await cp.flush()
  const ours = await best(REPS, async () => {
    data[0] = (data[0]! + 1) & 255
    const t = await time(() => cp.writeAsync(data))
    await cp.flush()
    return t
  })
  await cp.close()
  const dst = new Uint8Array(SIZE)
  dst.set(data)
  const copy = await best(REPS, () => time(() => dst.set(data)))
  row(`${label}: async save, loop blocked vs one warm copy`, fmtMs(ours), fmtMs(copy), ours / copy, '≤ 2×')
}

async function rawWrite(dir: string, data: Uint8Array): Promise<void> {
  const tmp = path.join(dir, `raw.tmp`)
  const fh = await fs.open(tmp, 'w')
  await fh.write(data)
  await fh.sync()
  await fh.close()
  await fs.rename(tmp, path.join(dir, 'raw'))
  const d = await fs.open(dir, 'r')
  await d.sync()
  await d.close()
}

async function dropCaches(): Promise<boolean> {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

async function main(): Promise<void> {
  console.log(`taskpoint checkpoint benchmarks: ${SIZE / MiB} MiB of state, median of ${REPS}`)
  const data = state()
  const base = mkdtempSync(path.join(tmpdir(), 'tp-bench-'))
  let n = 0
  const localCp = (o = {}) => Checkpointer.open(path.join(base, `cp${n++}`), { ...quiet, ...o })

  // 1. async save on local
  await asyncBlocked('local', localCp, data)

  // 2. sync local save vs raw write+fsync+rename (fresh directory each time: nothing deduplicated)
  const raw = await best(REPS, () => time(() => rawWrite(base, data)))
  const ours = await best(REPS, async () => {
    const cp = await localCp()
    const t = await time(() => cp.write(data))
    await cp.close()
    return t
  })
  row('local: sync save throughput vs raw write+fsync+rename', fmtRate(ours), fmtRate(raw), raw / ours, '≥ 0.9×')

  // 3. restore with verification vs raw read (page cache warm for both; cold too when we may drop caches)
  const restoreCp = await localCp()
  await restoreCp.write(data)
  await rawWrite(base, data)
  const rawRead = await best(REPS, () => time(() => fs.readFile(path.join(base, 'raw'))))
  const ourRead = await best(REPS, () => time(() => restoreCp.read()))
  row('local: verified restore vs raw read (warm cache)', fmtRate(ourRead), fmtRate(rawRead), rawRead / ourRead, '≥ 0.9×')
  if (await dropCaches()) {
    const coldRaw = await best(REPS, async () => (await dropCaches(), time(() => fs.readFile(path.join(base, 'raw')))))
    const coldOurs = await best(REPS, async () => (await dropCaches(), time(() => restoreCp.read())))
    row('local: verified restore vs raw read (cold cache)', fmtRate(coldOurs), fmtRate(coldRaw), coldRaw / coldOurs, '≥ 0.9×')
  }
  await restoreCp.close()

  // 5. deduplication: 10 checkpoints of a state whose first 90 % never changes
  {
    const dir = path.join(base, 'dedup')
    const cp = await Checkpointer.open(dir, quiet)
    const s = new Uint8Array(data)
    const tail = Math.floor(SIZE * 0.9)
    for (let i = 0; i < 10; i++) {
      s.set(randomBytes(SIZE - tail), tail)
      await cp.write(s, { step: i })
    }
    await cp.close()
    let stored = 0
    const { LocalStorage } = await import('../src/storage/index.js')
    for await (const o of new LocalStorage(dir).list()) stored += o.size
    const ideal = SIZE + 9 * (SIZE - tail)
    row(
      'bytes stored after 10 checkpoints, 90 % frozen, vs ideal (1 full + 10 % each after)',
      `${(stored / MiB).toFixed(1)} MiB`,
      `${(ideal / MiB).toFixed(1)} MiB`,
      stored / ideal,
      '≤ 1.2×',
    )
  }

  // 4. S3 and GCS uploads vs the SDK's default large-object path and the server's ceiling
  const servers = await startTestServers()
  try {
    const s3cfg = { endpoint: servers.s3!, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }
    const s3 = new S3Client({ ...s3cfg })
    await s3.send(new CreateBucketCommand({ Bucket: 'bench' }))
    const s3Storage = (p: string): Storage => new S3Storage('bench', p, { clientConfig: s3cfg })
    await asyncBlocked('s3', () => Checkpointer.open(s3Storage(`async-${n++}`), quiet), data)
    const s3Ours = await best(REPS, async () => {
      const cp = await Checkpointer.open(s3Storage(`ours-${n++}`), quiet)
      const t = await time(() => cp.write(data))
      await cp.close()
      return t
    })
    const s3Sdk = await best(REPS, () => time(() => new Upload({ client: s3, params: { Bucket: 'bench', Key: `sdk-${n++}`, Body: data } }).done()))
    const s3Ceiling = await ceiling((key, body) => s3.send(new PutObjectCommand({ Bucket: 'bench', Key: key, Body: body })), data)
    row('s3: checkpoint upload vs lib-storage Upload (defaults)', fmtRate(s3Ours), fmtRate(s3Sdk), s3Sdk / s3Ours, '> 1×')
    row(`s3: checkpoint upload vs server ceiling (best raw parallel puts: ${s3Ceiling.how})`, fmtRate(s3Ours), fmtRate(s3Ceiling.ms), s3Ceiling.ms / s3Ours, '≥ 0.9×')
    s3.destroy()

    const gcs = new GcsClient({ apiEndpoint: servers.gcs!, projectId: 'bench', retryOptions: { autoRetry: false } })
    const gcsStorage = (p: string): Storage => new GcsStorage('bench', p, { client: gcs })
    const gcsOurs = await best(REPS, async () => {
      const cp = await Checkpointer.open(gcsStorage(`ours-${n++}`), quiet)
      const t = await time(() => cp.write(data))
      await cp.close()
      return t
    })
    const gcsSdk = await best(REPS, () =>
      time(() =>
        gcs
          .bucket('bench')
          .file(`sdk-${n++}`)
          .save(Buffer.from(data.buffer, data.byteOffset, data.byteLength)),
      ),
    )
    const gcsCeiling = await ceiling(
      (key, body) =>
        gcs
          .bucket('bench')
          .file(key)
          .save(Buffer.from(body.buffer, body.byteOffset, body.byteLength), { resumable: false }),
      data,
    )
    row('gcs: checkpoint upload vs file.save (defaults: resumable)', fmtRate(gcsOurs), fmtRate(gcsSdk), gcsSdk / gcsOurs, '> 1×')
    row(`gcs: checkpoint upload vs server ceiling (best raw parallel puts: ${gcsCeiling.how})`, fmtRate(gcsOurs), fmtRate(gcsCeiling.ms), gcsCeiling.ms / gcsOurs, '≥ 0.9×')
  } finally {
    await servers.stop()
    await fs.rm(base, { recursive: true, force: true })
  }

  console.log('\n| benchmark | taskpoint | baseline | ratio | goal |\n|---|---|---|---|---|')
  for (const r of rows) console.log(`| ${r.what} | ${r.ours} | ${r.baseline} | ${r.ratio} | ${r.goal} |`)
}

/** The fastest the server takes these bytes: independent PUTs of a given size, several in flight. */
async function ceiling(put: (key: string, body: Uint8Array) => Promise<unknown>, data: Uint8Array): Promise<{ ms: number; how: string }> {
  let bestMs = Infinity
  let how = ''
  let k = 0
  for (const part of [4 * MiB, 8 * MiB]) {
    for (const conc of [4, 8, 16]) {
      const ms = await best(REPS, () =>
        time(async () => {
          const limit = pLimit(conc)
          const jobs: Promise<unknown>[] = []
          for (let o = 0; o < data.byteLength; o += part) jobs.push(limit(() => put(`ceil-${k++}`, data.subarray(o, o + part))))
          await Promise.all(jobs)
        }),
      )
      if (ms < bestMs) {
        bestMs = ms
        how = `${part / MiB} MiB × ${conc}`
      }
    }
  }
  return { ms: bestMs, how }
}

await main()
