import { randomBytes } from 'node:crypto'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, CheckpointKindError, FencedError, anyOf, best, everyNSteps, latest } from '../../src/index.js'
import { collectGarbage } from '../../src/admin.js'
import type { CheckpointerOptions } from '../../src/checkpoint/options.js'
import { Committer } from '../../src/checkpoint/committer.js'
import { describe as describeWrite, readFromCaller } from '../../src/checkpoint/snapshot.js'
import { ConfigError } from '../../src/errors.js'
import { LocalStorage } from '../../src/storage/local.js'
import { encodeManifest, manifestKey, type Manifest } from '../../src/format/manifest.js'
import { allBackends, type Backend } from '../helpers/backends.js'
import { KiB, chunkKeyOf, quiet, sha, keysOf as keys } from '../helpers/common.js'

describe.each(allBackends().map((b) => [b.name, b] as const))('Checkpointer on %s', (_n, backend: Backend) => {
  const open = async (opts = {}) => Checkpointer.open(await backend.open(), { chunkSize: 16 * KiB, ...quiet, ...opts })

  it('starts empty: no previous checkpoint, read() is undefined', async () => {
    const cp = await open()
    expect(cp.prevExists()).toBe(false)
    expect(await cp.read()).toBeUndefined()
    expect(await cp.list()).toEqual([])
    await cp.close()
  })

  it('write() commits; a fresh reader sees the exact bytes, step and metadata', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const a = randomBytes(100 * KiB)
    const b = randomBytes(3 * KiB)
    const i1 = await cp.write(a, { step: 10, metadata: { lr: 0.1 } })
    const i2 = await cp.write(b, { metadata: { lr: 0.05 } })
    expect(i1.step).toBe(10)
    expect(i2.step).toBe(11)
    const other = await Checkpointer.open(s, quiet)
    expect(other.prevExists()).toBe(true)
    expect(sha((await other.read())!)).toBe(sha(b))
    expect(sha((await other.read(i1.id))!)).toBe(sha(a))
    const list = await other.list()
    expect(list.map((c) => [c.step, c.metadata.lr, c.size])).toEqual([
      [10, 0.1, a.byteLength],
      [11, 0.05, b.byteLength],
    ])
  })

  it('writeAsync: returns before the commit, latest wins, flush() waits, memory stays bounded', async () => {
    const cp = await open()
    const buf = new Uint8Array(64 * KiB)
    for (let i = 0; i < 20; i++) {
      buf.fill(i)
      cp.writeAsync(buf, { step: i })
    }
    buf.fill(255) // mutating after writeAsync must not leak into the snapshot
    expect(cp.committing).toBe(true)
    await cp.flush()
    expect(cp.committing).toBe(false)
    const list = await cp.list()
    expect(list.length).toBeGreaterThanOrEqual(1)
    expect(list.length).toBeLessThan(20)
    expect(list.at(-1)!.step).toBe(19)
    expect(Buffer.from((await cp.read())!).equals(Buffer.alloc(64 * KiB, 19))).toBe(true)
    await cp.close()
  })

  it('structured state: named arrays with dtype/shape plus JSON', async () => {
    const cp = await open()
    const w = new Float32Array(10_000).map((_, i) => Math.sin(i))
    const it8 = new Int32Array([1, 2, 3])
    await cp.write({ arrays: { 'layer1/kernel': { data: w, shape: [100, 100] }, iter: it8 }, json: { epoch: 3, history: [1, 2] } }, { step: 3 })
    const st = (await cp.readState())!
    expect(st.json).toEqual({ epoch: 3, history: [1, 2] })
    expect(st.arrays['layer1/kernel']!.dtype).toBe('float32')
    expect(st.arrays['layer1/kernel']!.shape).toEqual([100, 100])
    const back = new Float32Array(st.arrays['layer1/kernel']!.data.slice().buffer)
    expect(Array.from(back)).toEqual(Array.from(w))
    expect(st.arrays.iter!.dtype).toBe('int32')
    await expect(cp.read()).rejects.toBeInstanceOf(CheckpointKindError)
    await expect(cp.write({ arrays: { '../evil': new Uint8Array(1) } })).rejects.toMatchObject({ code: 'InvalidKey' })
    await cp.close()
  })

  it('state arrays lie back to back in one file; copies keep them; a bad array index is refused', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { ...quiet, chunkSize: 16 * KiB })
    const a = new Float32Array(3000).map((_, i) => i / 7)
    const b = new Int32Array([7, 8, 9])
    const info = await cp.write({ arrays: { a, 'opt/b': { data: b, shape: [3] } }, json: { k: 1 } }, { step: 5 })
    const m = JSON.parse(
      Buffer.from(await s.get(info.id))
        .toString()
        .split('\n')
        .slice(1)
        .join('\n'),
    ) as Manifest
    expect(m.files.map((f) => f.path)).toEqual(['state.bin'])
    expect(m.arrays).toEqual([
      { name: 'a', dtype: 'float32', offset: 0, size: 12000 },
      { name: 'opt/b', dtype: 'int32', shape: [3], offset: 12000, size: 12 },
    ])
    const other = await Checkpointer.open(await backend.open(), quiet)
    await other.copyLatestFrom(cp)
    const st = (await other.readState())!
    expect(new Float32Array(st.arrays.a!.data.slice().buffer)).toEqual(a)
    expect(Array.from(new Int32Array(st.arrays['opt/b']!.data.slice().buffer))).toEqual([7, 8, 9])
    expect(st.info.step).toBe(5)
    const evil = { ...m, seq: m.seq + 1, arrays: [{ name: 'x', dtype: 'uint8', offset: 12000, size: 100 }] } as Manifest
    await s.put(manifestKey(evil), encodeManifest(evil))
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.readState())!.info.id).toBe(info.id)
    expect(reader.lastSkipped[0]!.reason).toMatch(/outside the state file/)
  })

  it('save() and restore() a directory tree with modes and empty files', async () => {
    const cp = await open()
    const src = mkdtempSync(path.join(tmpdir(), 'tp-src-'))
    await fs.mkdir(path.join(src, 'sub/deeper'), { recursive: true })
    const big = randomBytes(70 * KiB)
    await fs.writeFile(path.join(src, 'big.bin'), big)
    await fs.writeFile(path.join(src, 'empty'), '')
    await fs.writeFile(path.join(src, 'sub/deeper/run.sh'), '#!/bin/sh\n', { mode: 0o755 })
    await cp.save(src, { step: 1 })
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-dst-'))
    const r = (await cp.restore(dst))!
    expect(r.files.sort()).toEqual(['big.bin', 'empty', 'sub/deeper/run.sh'])
    expect(sha(await fs.readFile(path.join(dst, 'big.bin')))).toBe(sha(big))
    expect((await fs.stat(path.join(dst, 'empty'))).size).toBe(0)
    expect((await fs.stat(path.join(dst, 'sub/deeper/run.sh'))).mode & 0o777).toBe(0o755)
    await cp.close()
  })

  it('deduplicates: unchanged chunks are not uploaded again', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const state = randomBytes(160 * KiB)
    await cp.write(state)
    expect(cp.lastUpload!.uploaded).toBe(state.byteLength)
    state.set(randomBytes(16 * KiB), 144 * KiB) // change only the last chunk
    await cp.write(state)
    expect(cp.lastUpload!.uploaded).toBe(16 * KiB)
    expect(cp.lastUpload!.reusedChunks).toBe(9)
    // A new writer (next attempt) knows the chunks of the checkpoint it read back and verified.
    const next = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    await next.read()
    await next.write(state)
    expect(next.lastUpload!.uploaded).toBe(0)
    expect((await keys(s, 'chunks/')).length).toBe(11)
  })

  it('never returns damaged bytes: bit flips, truncation and missing chunks fall back to the previous checkpoint', async () => {
    const s = await backend.open()
    const warnings: string[] = []
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, repro: false, onWarning: (m) => warnings.push(m) })
    const good = randomBytes(40 * KiB)
    await cp.write(good, { step: 1 })
    const bad = randomBytes(40 * KiB)
    const info = await cp.write(bad, { step: 2 })
    const newChunks = await keys(s, 'chunks/')
    const manifest = await s.get(info.id)
    // Find one chunk that only the second checkpoint uses, and damage it in each way in turn.
    const m2 = JSON.parse(Buffer.from(manifest).toString().split('\n').slice(1).join('\n')) as Manifest
    const victim = chunkKeyOf(m2.files[0]!.chunks[1]!.hash)
    expect(newChunks).toContain(victim)
    const original = await s.get(victim)
    const damages: [string, () => Promise<unknown>][] = [
      [
        'bit flip',
        () =>
          s.put(
            victim,
            Uint8Array.from(original, (v, i) => (i === 100 ? v ^ 1 : v)),
          ),
      ],
      ['truncation', () => s.put(victim, original.subarray(0, 1000))],
      ['missing', () => s.delete(victim)],
    ]
    for (const [what, damage] of damages) {
      await damage()
      const reader = await Checkpointer.open(s, { repro: false, onWarning: (m) => warnings.push(m) })
      const got = await reader.read()
      expect(sha(got!), what).toBe(sha(good))
      expect(
        reader.lastSkipped.map((x) => x.id),
        what,
      ).toEqual([info.id])
      await s.put(victim, original)
      expect(sha((await reader.read())!), `${what} repaired`).toBe(sha(bad))
    }
    // Damaged manifest: bit flip and truncation.
    for (const broken of [Uint8Array.from(manifest, (v, i) => (i === manifest.length - 5 ? v ^ 4 : v)), manifest.subarray(0, manifest.length - 7), manifest.subarray(0, 10)]) {
      await s.put(info.id, broken)
      const reader = await Checkpointer.open(s, quiet)
      expect(sha((await reader.read())!)).toBe(sha(good))
      expect(reader.lastSkipped).toHaveLength(1)
      expect((await reader.list()).map((c) => c.step)).toEqual([1])
      expect((await reader.latest())!.step).toBe(1)
      expect(reader.lastSkipped.map((x) => x.id)).toEqual([info.id])
    }
    expect(warnings.some((w) => w.includes('skipping damaged checkpoint'))).toBe(true)
  })

  it('refuses a manifest whose file paths would escape the restore directory', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, quiet)
    const ok = await cp.write(Buffer.from('fine'), { step: 1 })
    const evil: Manifest = {
      format: 2,
      kind: 'files',
      seq: 99,
      epoch: 99,
      writer: 'zzz',
      step: 2,
      createdAt: new Date().toISOString(),
      chunkSize: 1024,
      totalSize: 0,
      metadata: {},
      repro: {},
      files: [{ path: '../../etc/owned', size: 0, chunks: [] }],
    }
    await s.put('manifests/00000099-000000000099-zzz-s000000000002.tpm', encodeManifest(evil))
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-evil-'))
    const reader = await Checkpointer.open(s, quiet)
    // The hostile checkpoint is skipped as damaged; the good one is what gets restored.
    const r = await reader.restore(path.join(dst, 'inner'))
    expect(r!.info.id).toBe(ok.id)
    await expect(fs.stat(path.join(dst, 'etc'))).rejects.toThrow()
    expect(reader.lastSkipped).toHaveLength(1)
  })

  it('retention keeps what the policy says and garbage-collects unreferenced chunks', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, keep: latest(2), gc: { minAgeMs: 0 }, ...quiet })
    const payloads: Buffer[] = []
    for (let i = 0; i < 5; i++) {
      payloads.push(randomBytes(32 * KiB))
      await cp.write(payloads[i]!, { step: i })
    }
    expect((await cp.list()).map((c) => c.step)).toEqual([3, 4])
    expect((await keys(s, 'chunks/')).length).toBe(4)
    expect(sha((await cp.read())!)).toBe(sha(payloads[4]!))
    // Orphans from a crashed save are collected too, but only once old enough.
    await s.put(`chunks/ab/ab${'0'.repeat(62)}`, Buffer.from('orphan'))
    expect((await collectGarbage(s, { minAgeMs: 60_000 })).deletedChunks).toBe(0)
    expect((await collectGarbage(s, { minAgeMs: 0 })).deletedChunks).toBe(1)
    await cp.close()
  })

  it('fences a zombie writer once a newer attempt has taken over', async () => {
    const s = await backend.open()
    const old = await Checkpointer.open(s, { ...quiet, attempt: 0 })
    await old.write(Buffer.from('attempt 0, step 1'), { step: 1 })
    const fresh = await Checkpointer.open(s, { ...quiet, attempt: 1 })
    await fresh.write(Buffer.from('attempt 1, step 1'), { step: 1 })
    await expect(old.write(Buffer.from('zombie'), { step: 2 })).rejects.toBeInstanceOf(FencedError)
    old.writeAsync(Buffer.from('zombie async'), { step: 3 })
    await expect(old.flush()).rejects.toBeInstanceOf(FencedError)
    await fresh.write(Buffer.from('attempt 1, step 2'), { step: 2 })
    const reader = await Checkpointer.open(s, quiet)
    expect(Buffer.from((await reader.read())!).toString()).toBe('attempt 1, step 2')
    expect((await reader.list()).map((c) => c.attempt)).toEqual([0, 1, 1])
  })
})

describe('retention policies', () => {
  const cps = [1, 2, 3, 4, 5, 6].map((step) => ({
    id: `m${step}`,
    step,
    seq: step,
    epoch: 1,
    writer: 'w',
    kind: 'bytes' as const,
    createdAt: new Date(),
    size: 1,
    files: 1,
    metadata: { loss: [5, 1, 4, 2, 6, 3][step - 1] },
  }))
  it('latest, everyNSteps, best and anyOf pick the right checkpoints', () => {
    expect([...latest(2)(cps)]).toEqual(['m5', 'm6'])
    expect([...everyNSteps(3)(cps)]).toEqual(['m3', 'm6'])
    expect([...best(2, 'loss')(cps)].sort()).toEqual(['m2', 'm4'])
    expect([...best(1, 'loss', 'max')(cps)]).toEqual(['m5'])
    expect([...anyOf(latest(1), best(1, 'loss'))(cps)].sort()).toEqual(['m2', 'm6'])
    expect(() => latest(0)).toThrow(RangeError)
  })
})

describe('background errors', () => {
  it('surface on flush() once and never as an unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown): void => void unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-bg-'))
    const cp = await Checkpointer.open(dir, quiet)
    await cp.write(Buffer.from('ok'))
    await fs.chmod(dir, 0o500)
    // root ignores permissions; make the chunk directory a file instead so the next put must fail
    await fs.rm(path.join(dir, 'chunks'), { recursive: true })
    await fs.writeFile(path.join(dir, 'chunks'), 'not a directory')
    expect(cp.committing).toBe(false)
    cp.writeAsync(Buffer.from('will fail'))
    expect(cp.committing).toBe(true)
    await new Promise((r) => setTimeout(r, 200))
    await expect(cp.flush()).rejects.toThrow()
    // A commit that failed is no longer under way.
    expect(cp.committing).toBe(false)
    await expect(cp.flush()).resolves.toBeUndefined()
    process.off('unhandledRejection', onUnhandled)
    expect(unhandled).toEqual([])
    await fs.chmod(dir, 0o700)
  })
})

describe('hashing off the main thread', () => {
  it('worker-thread sha256 of shared memory equals the in-place hash', async () => {
    const { sha256, sharedBytes } = await import('../../src/checkpoint/hash.js')
    const { sha256Hex: sha256Sync } = await import('../../src/format/manifest.js')
    const shared = sharedBytes(3 * 1024 * 1024 + 17)
    shared.set(randomBytes(shared.byteLength))
    const views = [shared, shared.subarray(5, 1024 * 1024 + 5), shared.subarray(2 * 1024 * 1024)]
    const hashes = await Promise.all(views.map((v) => sha256(v)))
    expect(hashes).toEqual(views.map((v) => sha256Sync(v)))
    expect(hashes[0]).toBe(sha(Buffer.from(shared)))
  })

  it('large chunks from disk and async snapshots round-trip through the worker path', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-big-'))
    const cp = await Checkpointer.open(path.join(dir, 'cp'), { ...quiet, chunkSize: 1024 * 1024, concurrency: 2 })
    const src = path.join(dir, 'src')
    await fs.mkdir(src)
    const a = randomBytes(5 * 1024 * 1024 + 3)
    await fs.writeFile(path.join(src, 'a.bin'), a)
    await cp.save(src)
    const loaded = await cp.load()
    expect(sha(loaded!.files.get('a.bin')!)).toBe(sha(a))
    const b = randomBytes(3 * 1024 * 1024)
    cp.writeAsync(b)
    await cp.flush()
    expect(sha((await cp.read())!)).toBe(sha(b))
    await cp.close()
  })
})

describe('options', () => {
  const open = (o: Record<string, unknown>): Promise<Checkpointer> => Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-opts-')), { ...quiet, ...o } as CheckpointerOptions)

  it('null (from a JSON config) is taken as left out, and Infinity where it means "no limit"', async () => {
    const cp = await open({
      writerId: null,
      // Were read past the settings: attempt: null failed every write, storage: null failed open with a TypeError.
      attempt: null,
      storage: null,
      repro: null,
      gc: { minAgeMs: Number.POSITIVE_INFINITY },
      chunkCache: null,
      onProgress: null,
      locks: { waitMs: Number.POSITIVE_INFINITY },
    })
    await cp.write(Buffer.from('x'))
    expect(Buffer.from((await cp.read())!).toString()).toBe('x')
    await cp.close()
    await (await open({ locks: null })).close()
  })

  it('an option given as undefined takes its default, as if left out', async () => {
    const cp = await open({ keep: undefined, chunkSize: undefined, concurrency: undefined, packFilesUpTo: undefined, writerId: undefined, attempt: undefined })
    await cp.write(Buffer.from('one'))
    await cp.write(Buffer.from('two'))
    expect(Buffer.from((await cp.read())!).toString()).toBe('two')
    expect(await cp.list()).toHaveLength(2) // kept all, the default
    await cp.close()
  })

  it.each([
    ['keep', { keep: { latest: 2 } }, /keep must be a retention policy such as latest\(3\).*got an object \(latest\)/],
    ['keep', { keep: 3 }, /keep must be a retention policy/],
    ['concurrency', { concurrency: 0 }, /concurrency must be a whole number from 1 to 1024, got 0/],
    ['concurrency', { concurrency: 2.5 }, /concurrency must be/],
    ['concurrency', { concurrency: Number.NaN }, /concurrency must be/],
    ['chunkSize', { chunkSize: 1023 }, /chunkSize must be a whole number from 1024 to 1 GiB, got 1023/],
    ['packFilesUpTo', { chunkSize: 4096, packFilesUpTo: 4097 }, /packFilesUpTo must be a whole number from 0 to chunkSize \(4096\)/],
    ['writerId', { writerId: 'Not-OK' }, /writerId must be 1-40 characters of \[0-9a-z\], got "Not-OK"/],
    ['attempt', { attempt: -1 }, /attempt must be a whole number >= 0, got -1/],
    ['attempt', { attempt: '2' }, /attempt must be a whole number >= 0, got "2"/],
    ['gc.minAgeMs', { gc: { minAgeMs: -5 } }, /gc\.minAgeMs must be a number of ms >= 0 \(Infinity: never collect\), got -5/],
    ['gc.enabled', { gc: { enabled: 'no' } }, /gc\.enabled must be true or false/],
    ['gc.sweepAfterMs', { gc: { sweepAfterMs: 2 ** 31 } }, /gc\.sweepAfterMs must be a whole number of milliseconds/],
    ['locks.refreshMs', { locks: { staleMs: 1000, refreshMs: 1000 } }, /locks\.refreshMs must be a number of ms above 0, at most half of locks\.staleMs \(1000\)/],
    // Passes "below staleMs", yet the holder takes its lock for lost at 0.8 staleMs: every commit
    // slower than 1.6 s failed with LockLost.
    ['locks.refreshMs', { locks: { staleMs: 2000, refreshMs: 1900 } }, /at most half of locks\.staleMs/],
    ['locks.staleMs', { locks: { staleMs: Number.POSITIVE_INFINITY } }, /locks\.staleMs must be a number of ms >= 1000, got Infinity/],
    // Its default refresh (staleMs / 6) could never keep a lock that short: it was refused naming refreshMs.
    ['locks.staleMs', { locks: { staleMs: 1 } }, /locks\.staleMs must be a number of ms >= 1000, got 1/],
    ['locks.waitMs', { locks: { waitMs: -1 } }, /locks\.waitMs must be a number of ms >= 0/],
    ['onProgress', { onProgress: 'x' }, /onProgress must be a function, got "x"/],
    ['onWarning', { onWarning: 1 }, /onWarning must be a function, got 1/],
    ['repro', { repro: { n: 5n } }, /repro must be true, false or a plain object of JSON values/],
    ['repro', { repro: 'yes' }, /repro must be true, false or a plain object of JSON values, got "yes"/],
    // A misspelt key was ignored without a word: keepp: latest(3) kept everything.
    ['keepp', { keepp: 3 }, /unknown option keepp: the options are keep, chunkSize,/],
    ['chunkCache.dirr', { chunkCache: { dirr: '/tmp/x' } }, /unknown option chunkCache\.dirr: the chunkCache options are dir, maxBytes/],
    ['gc.minAge', { gc: { minAge: 5 } }, /unknown option gc\.minAge: the gc options are minAgeMs, enabled, sweepAfterMs/],
    ['locks.stale', { locks: { stale: 5 } }, /unknown option locks\.stale: the locks options are staleMs, refreshMs, waitMs/],
    ['chunkCache', { chunkCache: 'on' }, /chunkCache must be true, false or \{ dir, maxBytes \}, got "on"/],
    ['chunkCache.dir', { chunkCache: { dir: 5 } }, /chunkCache\.dir must be a directory path, got 5/],
  ])('a bad %s is a ConfigError at open that names it: %o', async (_name, o, message) => {
    // Before, these passed open: a `keep` that is no policy warned at every commit and kept all, an
    // attempt of -1 wrote checkpoints that no reader accepts, `concurrency: 0` failed each write with
    // p-limit's error, a lock refreshed no more often than it goes stale was taken for dead.
    const e = await open(o).then(
      () => undefined,
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(ConfigError)
    expect((e as ConfigError).code).toBe('InvalidOption')
    expect((e as Error).message).toMatch(message)
  })

  it('a manifest that would not read back is never stored: the write fails and commits nothing', async () => {
    // The last line of defence behind the option checks: a value nothing checked (here an attempt
    // number handed to the committer directly) must fail the write, not make one no reader accepts.
    const root = mkdtempSync(path.join(tmpdir(), 'tp-unreadable-'))
    const storage = new LocalStorage(root)
    const committer = new Committer(storage, { writerId: 'w1', attempt: -1, chunkSize: 4096, concurrency: 2, packFilesUpTo: 0, repro: false, onWarning: () => {} })
    const snap = describeWrite(Buffer.from('payload'), {})
    readFromCaller(snap)
    const e = await committer.commit(snap).then(
      () => undefined,
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(ConfigError)
    expect((e as Error).message).toMatch(/not written: its manifest would not read back \(manifest is malformed: attempt is not a whole number >= 0\)/)
    expect(await keys(storage, 'manifests/')).toEqual([])
    const reader = await Checkpointer.open(root, quiet)
    expect(await reader.read()).toBeUndefined()
    await reader.close()
  })
})
