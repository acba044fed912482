import { randomBytes } from 'node:crypto'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, latest, type Storage } from '../../src/index.js'
import { collectGarbage, verifyCheckpoints } from '../../src/admin.js'
import { CorruptCheckpointError, chunkKey, chunksOf, decodeManifest, encodeManifest, manifestKey, type Manifest } from '../../src/format/manifest.js'
import { allBackends, type Backend } from '../helpers/backends.js'
import { KiB, quiet, sha } from '../helpers/common.js'

// Small files packed into shared chunks (format 2): round trip, dedup, damage, crafted manifests,
// garbage collection and verification, on every backend.

const CHUNK = 16 * KiB
const PACK_UP_TO = 4 * KiB
const opts = { chunkSize: CHUNK, packFilesUpTo: PACK_UP_TO, ...quiet }

function bodyOf(bytes: Uint8Array): Manifest {
  const b = Buffer.from(bytes)
  return JSON.parse(b.subarray(b.indexOf(10) + 1).toString()) as Manifest
}
const manifestOf = async (s: Storage, id: string): Promise<Manifest> => bodyOf(await s.get(id))

/** Every file under `dir` (relative path → sha256 and permission bits), hidden ones included. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) {
        out[`${r}/`] = 'dir'
        await walk(r)
      } else if (e.isSymbolicLink()) {
        out[r] = `link to ${await fs.readlink(path.join(dir, r))}`
      } else {
        const p = path.join(dir, r)
        out[r] = `${sha(await fs.readFile(p))} ${((await fs.stat(p)).mode & 0o7777).toString(8)}`
      }
    }
  }
  await walk('')
  return out
}

/** A tree of many small files (several packs), plus the edge cases around the threshold. */
async function mixedTree(): Promise<string> {
  const src = mkdtempSync(path.join(tmpdir(), 'tp-packs-src-'))
  const put = async (rel: string, bytes: Uint8Array, mode = 0o644): Promise<void> => {
    await fs.mkdir(path.dirname(path.join(src, rel)), { recursive: true })
    await fs.writeFile(path.join(src, rel), bytes)
    await fs.chmod(path.join(src, rel), mode)
  }
  await put('empty', new Uint8Array(0))
  await put('deep/er/empty', new Uint8Array(0), 0o600)
  await put('at-threshold', randomBytes(PACK_UP_TO))
  await put('one-over', randomBytes(PACK_UP_TO + 1))
  await put('large', randomBytes(3 * CHUNK + 123), 0o640)
  await put('tool', randomBytes(100), 0o4755)
  await put('a/b/c/d/nested', randomBytes(777), 0o700)
  for (let d = 0; d < 6; d++) for (let f = 0; f < 40; f++) await put(`d${d}/f${f}`, randomBytes(1 + ((d * 131 + f * 977) % 900)))
  return src
}

describe.each(allBackends().map((b) => [b.name, b] as const))('packed small files on %s', (_n, backend: Backend) => {
  it('a mixed tree round-trips: empty files, the threshold and one byte over, nesting, modes', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    const src = await mixedTree()
    const info = await cp.save(src, { step: 1 })
    const m = await manifestOf(s, info.id)
    const byPath = new Map(m.files.map((f) => [f.path, f]))
    expect(m.format).toBe(2)
    expect(byPath.get('at-threshold')!.packed).toBeDefined()
    expect(byPath.get('one-over')!.packed).toBeUndefined()
    expect(byPath.get('one-over')!.chunks).toHaveLength(1)
    expect(byPath.get('large')!.chunks).toHaveLength(4)
    expect(byPath.get('empty')!.packed).toBeUndefined()
    expect(byPath.get('empty')!.chunks).toEqual([])
    // ~250 small files in a handful of packs, none larger than a chunk.
    expect(m.packs!.length).toBeGreaterThan(3)
    expect(m.packs!.length).toBeLessThan(60)
    for (const p of m.packs!) expect(p.size).toBeLessThanOrEqual(CHUNK)

    const want = await snapshot(src)
    want.tool = want.tool!.replace(/ 4755$/, ' 755') // permission bits only
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-packs-dst-'))
    const r = await (await Checkpointer.open(s, opts)).restore(dst)
    expect(r!.files.length).toBe(m.files.length)
    expect(await snapshot(dst)).toEqual(want)

    // Into a directory that has other things: those stay, same names are overwritten, directories merge.
    const busy = mkdtempSync(path.join(tmpdir(), 'tp-packs-busy-'))
    await fs.mkdir(path.join(busy, 'd0'))
    await fs.writeFile(path.join(busy, 'd0', 'mine'), 'keep me')
    await fs.writeFile(path.join(busy, 'd0', 'f0'), 'overwrite me')
    await fs.writeFile(path.join(busy, 'other'), 'keep me too')
    await cp.restore(busy)
    expect(await snapshot(busy)).toEqual({ ...want, 'd0/mine': `${sha(Buffer.from('keep me'))} 644`, other: `${sha(Buffer.from('keep me too'))} 644` })

    // In memory too (what copyLatestFrom reads): every file from its pack, verified.
    const loaded = (await cp.load())!
    expect(sha(loaded.files.get('d3/f7')!)).toBe(sha(await fs.readFile(path.join(src, 'd3/f7'))))
    expect(loaded.files.get('empty')!.byteLength).toBe(0)
  })

  it('a conflict (a file or a link where a directory goes, a directory where a file goes) is found before anything moves', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    await cp.save(await mixedTree(), { step: 1 })
    const outside = mkdtempSync(path.join(tmpdir(), 'tp-packs-outside-'))
    for (const [why, arrange] of [
      ['file in the way', (dst: string) => fs.writeFile(path.join(dst, 'd3'), 'a file')],
      ['link in the way', (dst: string) => fs.symlink(outside, path.join(dst, 'd3'))],
      ['directory in the way', (dst: string) => fs.mkdir(path.join(dst, 'at-threshold'))],
    ] as const) {
      const dst = mkdtempSync(path.join(tmpdir(), 'tp-packs-conflict-'))
      await arrange(dst)
      const before = await snapshot(dst)
      await expect(cp.restore(dst), why).rejects.toMatchObject({ code: 'RestoreConflict' })
      expect(await snapshot(dst), why).toEqual(before)
    }
    expect(await fs.readdir(outside)).toEqual([])
  })

  it('an unchanged re-save uploads nothing; changing one small file uploads its pack only', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    const src = await mixedTree()
    const first = await manifestOf(s, (await cp.save(src, { step: 1 })).id)
    const total = cp.lastUpload!.total

    const again = await manifestOf(s, (await cp.save(src, { step: 2 })).id)
    expect(cp.lastUpload!.uploaded).toBe(0)
    expect(again.packs).toEqual(first.packs)

    // Same size, new bytes: exactly its own pack goes up again.
    const victim = first.files.find((f) => f.path === 'd2/f5')!
    await fs.writeFile(path.join(src, 'd2/f5'), randomBytes(victim.size))
    const changed = await manifestOf(s, (await cp.save(src, { step: 4 })).id)
    expect(cp.lastUpload!.newChunks).toBe(1)
    expect(cp.lastUpload!.uploaded).toBe(first.packs![victim.packed!.pack]!.size)
    const differing = changed.packs!.filter((p, i) => p.hash !== first.packs![i]?.hash)
    expect(differing).toHaveLength(1)

    // A file that grows moves the pack boundary at most once: not every pack after it.
    await fs.writeFile(path.join(src, 'd1/f3'), randomBytes(800))
    const grown = await manifestOf(s, (await cp.save(src, { step: 5 })).id)
    expect(cp.lastUpload!.newChunks).toBeLessThanOrEqual(2)
    expect(cp.lastUpload!.uploaded).toBeLessThanOrEqual(2 * CHUNK)
    expect(cp.lastUpload!.uploaded).toBeLessThan(total / 4)

    // A new writer (nothing in its ledger) uploads again but lands on the same chunks.
    const other = await Checkpointer.open(s, opts)
    expect((await manifestOf(s, (await other.save(src, { step: 6 })).id)).packs).toEqual(grown.packs)
  })

  it('a large file restored chunk-parallel: a damaged middle chunk leaves the directory as it was; intact, it round-trips', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { ...opts, concurrency: 3 })
    const src = mkdtempSync(path.join(tmpdir(), 'tp-big-'))
    const big = randomBytes(7 * opts.chunkSize + 123)
    await fs.writeFile(path.join(src, 'big.bin'), big)
    await fs.writeFile(path.join(src, 'also-big.bin'), randomBytes(3 * opts.chunkSize))
    await fs.writeFile(path.join(src, 'small.txt'), 'small')
    const c = await cp.save(src, { step: 1 })
    const ok = mkdtempSync(path.join(tmpdir(), 'tp-big-ok-'))
    await cp.restore(ok)
    for (const f of ['big.bin', 'also-big.bin', 'small.txt']) expect(sha(await fs.readFile(path.join(ok, f))), f).toBe(sha(await fs.readFile(path.join(src, f))))
    const m = await manifestOf(s, c.id)
    const victim = chunkKey(m.files.find((f) => f.path === 'big.bin')!.chunks[4]!.hash)
    const good = await s.get(victim)
    await s.put(
      victim,
      Uint8Array.from(good, (v, i) => (i === 3 ? v ^ 1 : v)),
    )
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-big-dmg-'))
    await fs.writeFile(path.join(dst, 'sentinel'), 'was here')
    const before = await snapshot(dst)
    await expect((await Checkpointer.open(s, opts)).restore(dst, { id: c.id })).rejects.toBeInstanceOf(CorruptCheckpointError)
    expect(await snapshot(dst)).toEqual(before)
  })

  it('a damaged, truncated or swapped pack fails the restore, leaves the directory as it was, and falls back', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    const src = await mixedTree()
    const old = await cp.save(src, { step: 1 })
    for (let f = 0; f < 40; f++) await fs.writeFile(path.join(src, 'd4', `f${f}`), randomBytes(300 + f))
    const c2 = await cp.save(src, { step: 2 })
    const m1 = await manifestOf(s, old.id)
    const m2 = await manifestOf(s, c2.id)
    const inOld = new Set(chunksOf(m1).map((c) => c.hash))
    const fresh = m2.packs!.filter((p) => !inOld.has(p.hash))
    expect(fresh.length).toBeGreaterThanOrEqual(2)
    const [a, b] = [chunkKey(fresh[0]!.hash), chunkKey(fresh[1]!.hash)]
    const [ba, bb] = [await s.get(a), await s.get(b)]

    const dst = mkdtempSync(path.join(tmpdir(), 'tp-packs-dmg-'))
    await fs.writeFile(path.join(dst, 'sentinel'), 'was here')
    await fs.mkdir(path.join(dst, 'd4'))
    await fs.writeFile(path.join(dst, 'd4', 'f1'), 'old bytes')
    const before = await snapshot(dst)
    for (const [why, damage] of [
      [
        'bit flip',
        () =>
          s.put(
            a,
            Uint8Array.from(ba, (v, i) => (i === 7 ? v ^ 4 : v)),
          ),
      ],
      ['truncated', () => s.put(a, ba.subarray(0, ba.byteLength - 1))],
      ['swapped', async () => (await s.put(a, bb), await s.put(b, ba))],
    ] as const) {
      await damage()
      // Pinned to the damaged checkpoint: it fails and nothing of it lands in the directory.
      const reader = await Checkpointer.open(s, opts)
      await expect(reader.restore(dst, { id: c2.id }), why).rejects.toBeInstanceOf(CorruptCheckpointError)
      expect(await snapshot(dst), why).toEqual(before)
      // Unpinned: the older checkpoint is restored instead.
      const out = mkdtempSync(path.join(tmpdir(), 'tp-packs-fb-'))
      const r = await reader.restore(out)
      expect(r!.info.id, why).toBe(old.id)
      expect(reader.lastSkipped.map((x) => x.id)).toEqual([c2.id])
      expect(sha(await fs.readFile(path.join(out, 'd4', 'f1'))), why).toBe(sha(Buffer.from((await reader.load(old.id))!.files.get('d4/f1')!)))
      await s.put(a, ba)
      await s.put(b, bb)
    }
    // Repaired: the newest restores again.
    expect((await (await Checkpointer.open(s, opts)).restore(mkdtempSync(path.join(tmpdir(), 'tp-packs-ok-'))))!.info.id).toBe(c2.id)
  })

  it('crafted pack references are damage: the reader falls back, never crashes or reads out of range', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    const src = await mixedTree()
    const good = await cp.save(src, { step: 1 })
    const real = await manifestOf(s, good.id)
    const key = manifestKey({ epoch: real.epoch, seq: 99, step: 99, writer: real.writer })
    const crafted = structuredClone(real)
    crafted.seq = 99
    crafted.step = 99
    const f = crafted.files.find((x) => x.packed)!
    f.packed!.offset = crafted.packs![f.packed!.pack]!.size // past the end
    await s.put(key, encodeManifest(crafted))
    const reader = await Checkpointer.open(s, opts)
    const r = await reader.restore(mkdtempSync(path.join(tmpdir(), 'tp-packs-craft-')))
    expect(r!.info.id).toBe(good.id)
    expect(reader.lastSkipped.map((x) => x.id)).toEqual([key])
  })

  it('garbage collection after retention keeps every pack a live checkpoint needs, and only those', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { ...opts, keep: latest(1), gc: { minAgeMs: 0 } })
    const src = await mixedTree()
    const m1 = await manifestOf(s, (await cp.save(src, { step: 1 })).id)
    await fs.writeFile(path.join(src, 'd5/f9'), randomBytes(m1.files.find((f) => f.path === 'd5/f9')!.size))
    const c2 = await cp.save(src, { step: 2 })
    const m2 = await manifestOf(s, c2.id)
    expect((await cp.list()).map((i) => i.id)).toEqual([c2.id])
    const live = new Set(chunksOf(m2).map((c) => c.hash))
    const gone = chunksOf(m1).filter((c) => !live.has(c.hash))
    expect(gone).toHaveLength(1) // the old pack of d5/f9
    for (const c of chunksOf(m2)) expect(await s.head(chunkKey(c.hash)), c.hash).toBeDefined()
    expect(await s.head(chunkKey(gone[0]!.hash))).toBeUndefined()
    // And a collection on its own deletes nothing more.
    expect((await collectGarbage(s, { minAgeMs: 0 })).deletedChunks).toBe(0)
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-packs-gc-'))
    expect((await (await Checkpointer.open(s, opts)).restore(dst))!.info.id).toBe(c2.id)
    expect(sha(await fs.readFile(path.join(dst, 'd5/f9')))).toBe(sha(await fs.readFile(path.join(src, 'd5/f9'))))
  })

  it('verify reads every pack and names a file of a damaged one', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, opts)
    const info = await cp.save(await mixedTree(), { step: 1 })
    const m = await manifestOf(s, info.id)
    const [ok] = await verifyCheckpoints(s)
    expect(ok!.problems).toEqual([])
    expect(ok!.chunks).toBe(chunksOf(m).length)
    const p = m.packs![1]!
    await s.put(chunkKey(p.hash), randomBytes(p.size))
    const [bad] = await verifyCheckpoints(s)
    expect(bad!.problems).toHaveLength(1)
    const first = m.files.find((f) => f.packed?.pack === 1)!.path
    expect(bad!.problems[0]).toContain(first)
    expect(bad!.problems[0]).toMatch(/fails its hash check/)
  })
})

describe('pack references in the manifest check', () => {
  const hash = (c: string): string => c.repeat(64)
  /** A valid format-2 manifest with two packs tiled by three files, plus one chunked file. */
  const base = (): Manifest => ({
    format: 2,
    kind: 'files',
    seq: 1,
    epoch: 1,
    writer: 'w',
    step: 1,
    createdAt: new Date(0).toISOString(),
    chunkSize: 1024,
    totalSize: 100 + 50 + 30 + 1000,
    metadata: {},
    repro: {},
    packs: [
      { hash: hash('a'), size: 150 },
      { hash: hash('b'), size: 30 },
    ],
    files: [
      { path: 'x', size: 100, chunks: [], packed: { pack: 0, offset: 0 } },
      { path: 'y', size: 50, chunks: [], packed: { pack: 0, offset: 100 } },
      { path: 'z', size: 30, chunks: [], packed: { pack: 1, offset: 0 } },
      { path: 'big', size: 1000, chunks: [{ hash: hash('c'), size: 1000 }] },
    ],
  })
  const key = manifestKey({ epoch: 1, seq: 1, step: 1, writer: 'w' })
  const check = (m: Manifest): Manifest => decodeManifest(key, encodeManifest(m))

  it('accepts a well-formed one, and chunksOf lists every pack and chunk once', () => {
    const m = check(base())
    expect(chunksOf(m).map((c) => [c.hash[0], c.size, c.paths])).toEqual([
      ['a', 150, ['x', 'y']],
      ['b', 30, ['z']],
      ['c', 1000, ['big']],
    ])
  })

  const cases: [string, (m: Manifest) => void][] = [
    ['offset past the end', (m) => (m.files[1]!.packed!.offset = 150)],
    ['negative offset', (m) => (m.files[1]!.packed!.offset = -1)],
    ['fractional offset', (m) => (m.files[1]!.packed!.offset = 99.5)],
    ['huge offset', (m) => (m.files[1]!.packed!.offset = 2 ** 60)],
    ['unsafe offset that would round', (m) => (m.files[1]!.packed!.offset = Number.MAX_SAFE_INTEGER)],
    ['overlapping the end', (m) => (m.files[1]!.packed!.offset = 101)],
    ['overlapping another file', (m) => (m.files[1]!.packed!.offset = 99)],
    ['a gap', (m) => ((m.packs![0]!.size = 151), (m.totalSize += 0))],
    ['pack index out of range', (m) => (m.files[2]!.packed!.pack = 2)],
    ['negative pack index', (m) => (m.files[2]!.packed!.pack = -1)],
    ['pack index not a number', (m) => (m.files[2]!.packed = { pack: '0', offset: 0 } as never)],
    ['packed and chunked', (m) => m.files[2]!.chunks.push({ hash: hash('d'), size: 30 })],
    ['packed with no bytes', (m) => ((m.files[2]!.size = 0), (m.totalSize -= 30), (m.packs![1]!.size = 1))],
    ['a pack nobody fills', (m) => m.packs!.push({ hash: hash('e'), size: 10 })],
    ['a pack larger than a chunk', (m) => (m.packs![0]!.size = 2048)],
    ['a pack with a bad id', (m) => (m.packs![0]!.hash = 'zz')],
    ['packs not a list', (m) => (m.packs = {} as never)],
    ['a packed file with no pack list', (m) => delete m.packs],
    ['sizes that do not add up', (m) => (m.files[0]!.size = 99)],
    ['packs in a format-1 manifest', (m) => (m.format = 1)],
  ]
  it.each(cases)('refuses %s as CorruptCheckpoint', (_why, change) => {
    const m = base()
    change(m)
    expect(() => check(m)).toThrow(CorruptCheckpointError)
  })
})
