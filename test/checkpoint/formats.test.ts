// Format 2 names chunks by BLAKE3; locations written by format 1 (sha256) must stay readable,
// collectable and verifiable, on every backend. The fixture was written by the previous release
// (test/fixtures/format1/make.mjs, run against commit 2de76f7), not re-created by this code.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { collectGarbage, verifyCheckpoints } from '../../src/admin.js'
import { chunkId, matchesChunkId, sharedBytes } from '../../src/checkpoint/hash.js'
import { encodeManifest, type Manifest } from '../../src/format/manifest.js'
import { Checkpointer, type Storage } from '../../src/index.js'
import { LocalStorage } from '../../src/storage/index.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { chunkIdOf, keysOf, quiet, sha } from '../helpers/common.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const FIXTURE = path.join(here, '..', 'fixtures', 'format1')

/** The deterministic bytes make.mjs wrote. */
function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0 // as make.mjs wrote it (float arithmetic included)
    b[i] = x >>> 24
  }
  return b
}

/** Copies the format-1 location object by object into `s`. */
async function plantFormat1(s: Storage): Promise<void> {
  const src = new LocalStorage(path.join(FIXTURE, 'location'))
  for await (const o of src.list()) await s.put(o.key, await src.get(o.key))
}

afterAll(closeEnforcingProxies)

describe.each(allBackends().map((b) => [b.name, b] as const))('format 1 locations on %s', (_n, backend: Backend) => {
  it('read, restore and readState what the previous release wrote; verify passes', async () => {
    const s = await backend.open()
    await plantFormat1(s)
    const cp = await Checkpointer.open(s, quiet)
    const all = await cp.list()
    expect(all.map((c) => c.step)).toEqual([1, 2, 3])
    expect(Buffer.from((await cp.read(all[0]!.id))!).equals(bytes(10000, 1))).toBe(true)
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-fmt1-'))
    await cp.restore(dst, { id: all[1]!.id })
    for (const f of ['a.txt', 'sub/b.bin']) expect(sha(await fs.readFile(path.join(dst, f)))).toBe(sha(await fs.readFile(path.join(FIXTURE, 'expected-files', f))))
    const st = await cp.readState()
    expect(Array.from(st!.arrays.w!.data)).toEqual([1.5, -2, 3.25])
    expect(Array.from(st!.arrays.ids!.data)).toEqual([7, 8])
    expect(st!.json).toEqual({ epoch: 3 })
    const report = await verifyCheckpoints(s, { all: true })
    expect(report.map((r) => r.problems)).toEqual([[], [], []])
    await cp.close()
  })

  it('a new writer adds BLAKE3 chunks beside them; GC keeps both kinds while referenced and frees format-1 chunks once unreferenced', async () => {
    const s = await backend.open()
    await plantFormat1(s)
    const oldChunks = (await keysOf(s, 'chunks/')).sort()
    const cp = await Checkpointer.open(s, quiet)
    const data = bytes(10000, 1) // the same bytes as step 1: stored again under BLAKE3 ids, not deduplicated across algorithms
    const info = await cp.write(data, { step: 4 })
    // Its manifest is grouped (key layout 2) beside the previous release's flat ones; all are listed.
    expect(info.id.split('/').length).toBe(3)
    expect((await cp.list()).map((c) => [c.step, c.id.split('/').length])).toEqual([
      [1, 2],
      [2, 2],
      [3, 2],
      [4, 3],
    ])
    expect((await (await Checkpointer.open(s, quiet)).latest())?.id).toBe(info.id)
    const newChunks = (await keysOf(s, 'chunks/')).filter((k) => !oldChunks.includes(k))
    expect(newChunks.length).toBeGreaterThan(0)
    expect(newChunks.every((k) => k.split('/').at(-1)!.startsWith('b3-'))).toBe(true)
    await collectGarbage(s, { minAgeMs: 0 })
    expect((await keysOf(s, 'chunks/')).sort()).toEqual([...oldChunks, ...newChunks].sort())
    // Drop the format-1 checkpoints: their chunks become garbage, the new one's stay.
    for (const c of (await cp.list()).filter((c) => c.step < 4)) await s.delete(c.id)
    await collectGarbage(s, { minAgeMs: 0 })
    expect((await keysOf(s, 'chunks/')).sort()).toEqual(newChunks.sort())
    expect(Buffer.from((await (await Checkpointer.open(s, quiet)).read())!).equals(data)).toBe(true)
    await cp.close()
  })

  it('a format-1 manifest that names a BLAKE3 chunk is a forgery: skipped as damaged', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, quiet)
    const good = await cp.write(bytes(100, 5), { step: 1 })
    const m = JSON.parse(
      Buffer.from(await s.get(good.id))
        .toString()
        .split('\n')
        .slice(1)
        .join('\n'),
    ) as Manifest
    const forged: Manifest = { ...m, format: 1, seq: m.seq + 1, step: 2 }
    const key = good.id.replace(/-0*1-([0-9a-z]+)-s0*1\.tpm$/, (_x, w: string) => `-${String(m.seq + 1).padStart(12, '0')}-${w}-s${'2'.padStart(12, '0')}.tpm`)
    await s.put(key, encodeManifest(forged))
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.latest())!.step).toBe(1)
    expect(reader.lastSkipped.map((x) => x.id)).toEqual([key])
    await cp.close()
  })
})

describe('chunk ids', () => {
  it('BLAKE3 ids are the same in place, on worker threads and for any view of shared memory; both algorithms verify', async () => {
    const shared = sharedBytes(3 * 1024 * 1024 + 17)
    for (let i = 0; i < shared.byteLength; i += 4096) shared[i] = (i * 7) & 255
    const views = [shared, shared.subarray(5, 1024 * 1024 + 5), shared.subarray(2 * 1024 * 1024), shared.subarray(0, 100)]
    const ids = await Promise.all(views.map((v) => chunkId(v)))
    expect(ids).toEqual(views.map((v) => chunkIdOf(v)))
    expect(views.map((v) => chunkId(Buffer.from(v)))).toEqual(ids) // unshared copies: hashed in place
    expect(await matchesChunkId(views[1]!, ids[1]!)).toBe(true)
    expect(await matchesChunkId(views[1]!, ids[2]!)).toBe(false)
    expect(await matchesChunkId(views[1]!, sha(views[1]!))).toBe(true)
    expect(await matchesChunkId(views[1]!, sha(views[2]!))).toBe(false)
  })

  it('TASKPOINT_HASH=sha256 (as where the native module cannot load) writes sha256 ids that every reader verifies; hashing works under node --input-type=module (needs npm run build)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-sha-'))
    const entry = path.join(here, '..', '..', 'dist', 'src', 'index.js')
    const script = `const { Checkpointer } = await import(${JSON.stringify(entry)}); const cp = await Checkpointer.open(${JSON.stringify(dir)}, { repro: false }); await cp.write(new Uint8Array(300000).fill(9), { step: 1 }); await cp.close()`
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, TASKPOINT_HASH: 'sha256' } })
    const s = new LocalStorage(dir)
    const chunks = await keysOf(s, 'chunks/')
    expect(chunks.map((k) => k.split('/').at(-1))).toEqual([sha(new Uint8Array(300000).fill(9))])
    expect(Buffer.from((await (await Checkpointer.open(s, quiet)).read())!).equals(Buffer.alloc(300000, 9))).toBe(true)
    expect((await verifyCheckpoints(s)).map((r) => r.problems)).toEqual([[]])
  })
})
