import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { Checkpointer, type Storage } from '../../src/index.js'
import { ChunkCache, defaultCacheDir } from '../../src/checkpoint/chunk-cache.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { chunkIdOf, chunkKeyOf, sha } from '../helpers/common.js'

// The local chunk cache (issue 12, item 6): a second restore downloads nothing, a changed
// checkpoint downloads only what changed, and nothing in the cache is ever trusted.

const KiB = 1024
const CHUNK = 64 * KiB
const quiet = { onWarning: () => {}, repro: false as const, chunkSize: CHUNK }

/** Counts chunk bytes fetched from the store. */
function counting(inner: Storage): { storage: Storage; chunkGets: () => number; bytes: () => number; reset: () => void } {
  let gets = 0
  let bytes = 0
  const storage = Object.create(inner) as Storage
  storage.get = async (key, o) => {
    const out = await inner.get(key, o)
    if (key.startsWith('chunks/')) {
      gets++
      bytes += out.byteLength
    }
    return out
  }
  return { storage, chunkGets: () => gets, bytes: () => bytes, reset: () => ((gets = 0), (bytes = 0)) }
}

async function cacheFiles(dir: string): Promise<{ name: string; size: number }[]> {
  const out: { name: string; size: number }[] = []
  for (const sub of await fs.readdir(dir).catch(() => [] as string[])) {
    for (const name of await fs.readdir(path.join(dir, sub))) out.push({ name, size: (await fs.stat(path.join(dir, sub, name))).size })
  }
  return out
}

const freshDir = (): string => mkdtempSync(path.join(tmpdir(), 'tp-chunk-cache-'))

afterAll(closeEnforcingProxies)

describe.each(allBackends().map((b) => [b.name, b] as const))('chunk cache on %s', (_n, backend: Backend) => {
  it('a second restore and read download 0 bytes; a changed chunk is the only download after a fine-tune step', async () => {
    const dir = freshDir()
    const inner = await backend.open()
    const state = randomBytes(8 * CHUNK + 123)
    const w = await Checkpointer.open(inner, quiet)
    await w.write(state)
    const { storage, chunkGets, bytes, reset } = counting(inner)
    const cp = await Checkpointer.open(storage, { ...quiet, chunkCache: { dir } })
    const out = mkdtempSync(path.join(tmpdir(), 'tp-restore-'))
    await cp.restore(out)
    expect(bytes()).toBeGreaterThanOrEqual(state.byteLength)
    reset()
    // A new process on the same machine: a new Checkpointer over the same cache directory.
    const again = await Checkpointer.open(storage, { ...quiet, chunkCache: { dir } })
    await again.restore(out)
    expect(sha(await fs.readFile(path.join(out, 'data')))).toBe(sha(state))
    expect(Buffer.from((await again.read())!).equals(state)).toBe(true)
    expect([chunkGets(), bytes()]).toEqual([0, 0])
    expect(again.chunkCache!.stats.hits).toBe(18)

    // A fine-tune step changes one chunk (the head; the frozen backbone stays).
    const tuned = Buffer.from(state)
    tuned[5] = tuned[5]! ^ 0xff
    await w.write(tuned)
    reset()
    const third = await Checkpointer.open(storage, { ...quiet, chunkCache: { dir } })
    expect(Buffer.from((await third.read())!).equals(tuned)).toBe(true)
    expect([chunkGets(), bytes()]).toEqual([1, CHUNK])
    await inner.close()
  })

  it('a damaged, truncated, swapped or half-written cache entry is never returned, and is replaced', async () => {
    const dir = freshDir()
    const inner = await backend.open()
    const state = randomBytes(4 * CHUNK)
    const hashes = [0, 1, 2, 3].map((i) => chunkIdOf(state.subarray(i * CHUNK, (i + 1) * CHUNK)))
    await (await Checkpointer.open(inner, quiet)).write(state)
    await (await Checkpointer.open(inner, { ...quiet, chunkCache: { dir } })).read()
    const file = (h: string): string => path.join(dir, ...chunkKeyOf(h).split('/').slice(1))
    const flip = Buffer.from(await fs.readFile(file(hashes[0]!)))
    flip[100] = flip[100]! ^ 1
    await fs.writeFile(file(hashes[0]!), flip)
    await fs.truncate(file(hashes[1]!), CHUNK - 1)
    await fs.copyFile(file(hashes[3]!), file(hashes[2]!))
    await fs.writeFile(path.join(path.dirname(file(hashes[3]!)), '.tmp-1-deadbeef'), 'half')
    const { storage, chunkGets, reset } = counting(inner)
    reset()
    const cp = await Checkpointer.open(storage, { ...quiet, chunkCache: { dir } })
    expect(Buffer.from((await cp.read())!).equals(state)).toBe(true)
    expect(chunkGets()).toBe(3)
    expect(cp.chunkCache!.stats).toMatchObject({ hits: 1, rejected: 3 })
    for (const h of hashes) expect(chunkIdOf(await fs.readFile(file(h)))).toBe(h)
    await inner.close()
  })

  it('a cache hit does not vouch for the store: a chunk lost from the store is uploaded again by the next write', async () => {
    const dir = freshDir()
    const s = await backend.open()
    const state = randomBytes(2 * CHUNK)
    const w = await Checkpointer.open(s, { ...quiet, chunkCache: { dir } })
    await w.write(state)
    await w.read() // fills the cache
    const lost = chunkKeyOf(chunkIdOf(state.subarray(0, CHUNK)))
    await s.delete(lost)
    const next = await Checkpointer.open(s, { ...quiet, chunkCache: { dir } })
    expect(Buffer.from((await next.read())!).equals(state)).toBe(true)
    expect(next.chunkCache!.stats.hits).toBe(2)
    await next.write(state)
    expect(await s.head(lost)).toBeDefined()
    // Without the cache, the store's checkpoint reads back whole again.
    expect(Buffer.from((await (await Checkpointer.open(s, quiet)).read())!).equals(state)).toBe(true)
    await s.close()
  })
})

describe('chunk cache bounds and sharing', () => {
  it('stays within maxBytes, evicting the least recently used', async () => {
    const dir = freshDir()
    const cache = new ChunkCache({ dir, maxBytes: 3 * CHUNK })
    const chunks = [0, 1, 2, 3, 4].map(() => randomBytes(CHUNK))
    for (const c of chunks.slice(0, 3)) await cache.write(sha(c), c)
    // Last uses set explicitly (no reliance on clock granularity): 1 oldest, then 2, then 0; then
    // reading 0 makes it the most recent, so evictions take 1 and 2.
    const ago = (s: number): Date => new Date(Date.now() - s * 1000)
    for (const [i, s] of [
      [0, 30],
      [1, 60],
      [2, 40],
    ] as const)
      await fs.utimes(path.join(dir, sha(chunks[i]!).slice(0, 2), sha(chunks[i]!)), ago(s), ago(s))
    expect(await cache.read(sha(chunks[0]!), CHUNK)).toBeDefined()
    for (const c of chunks.slice(3)) await cache.write(sha(c), c)
    await cache.trim()
    const left = (await cacheFiles(dir)).filter((f) => !f.name.startsWith('.'))
    expect(left.reduce((s, f) => s + f.size, 0)).toBeLessThanOrEqual(3 * CHUNK)
    expect(left.map((f) => f.name)).toContain(sha(chunks[0]!))
    expect(left.map((f) => f.name).sort()).toEqual([0, 3, 4].map((i) => sha(chunks[i]!)).sort())
  })

  it('processes sharing one directory write each chunk whole (temp + rename), with nothing left over', async () => {
    const dir = freshDir()
    const chunk = randomBytes(CHUNK)
    const h = sha(chunk)
    const caches = Array.from({ length: 8 }, () => new ChunkCache({ dir }))
    await Promise.all(caches.map((c) => c.write(h, chunk)))
    expect(await cacheFiles(dir)).toEqual([{ name: h, size: CHUNK }])
    const got = await Promise.all(caches.map((c) => c.read(h, CHUNK)))
    for (const g of got) expect(g && sha(g)).toBe(h)
  })

  it('processes hammering one directory under a tight bound never read wrong bytes (needs npm run build)', async () => {
    const dir = freshDir()
    const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'test', 'fixtures', 'cache-hammer.js')
    const run = (seed: number): Promise<{ code: number | null; out: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [script, dir, String(seed), '400'], { stdio: ['ignore', 'pipe', 'inherit'] })
        let out = ''
        child.stdout.on('data', (d: Buffer) => (out += d.toString()))
        child.on('exit', (code) => resolve({ code, out }))
      })
    const results = await Promise.all([1, 2, 3].map(run))
    for (const r of results) {
      expect(r.code, r.out).toBe(0)
      const stats = JSON.parse(r.out) as { wrong: number; hits: number; misses: number }
      expect(stats.wrong).toBe(0)
      expect(stats.hits + stats.misses).toBe(400)
      // Both paths ran: chunks were served, and evicted and fetched again (12 chunks, room for 5).
      expect(stats.hits).toBeGreaterThan(0)
      expect(stats.misses).toBeGreaterThan(12)
    }
    // Whatever is left is whole: every file hashes to its name.
    for (const f of await cacheFiles(dir)) {
      if (f.name.startsWith('.')) continue
      expect(sha(await fs.readFile(path.join(dir, f.name.slice(0, 2), f.name)))).toBe(f.name)
    }
  }, 60_000)

  it('has a documented default directory and refuses a bad bound', () => {
    const before = process.env.TASKPOINT_CACHE_DIR
    process.env.TASKPOINT_CACHE_DIR = '/tmp/x-cache'
    expect(defaultCacheDir()).toBe('/tmp/x-cache')
    delete process.env.TASKPOINT_CACHE_DIR
    expect(defaultCacheDir()).toMatch(/taskpoint\/chunks$/)
    if (before !== undefined) process.env.TASKPOINT_CACHE_DIR = before
    expect(() => new ChunkCache({ maxBytes: -1 })).toThrow(/maxBytes/)
  })
})
