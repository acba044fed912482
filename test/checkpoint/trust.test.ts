import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, latest, type Storage } from '../../src/index.js'
import { collectGarbage, prune, verifyCheckpoints } from '../../src/admin.js'
import { chunkKey, encodeManifest, manifestKey, type Manifest } from '../../src/format/manifest.js'
import { acquireExclusive } from '../../src/checkpoint/locks.js'
import { allBackends, type Backend } from '../helpers/backends.js'
import { KiB, chunkIdOf, collectorStrikesDuringManifest, quiet, sha, keysOf as keys } from '../helpers/common.js'

// The data-safety guarantees (issue "Trust I"), each shown by breaking it on every backend.

function bodyOf(bytes: Uint8Array): Manifest {
  const b = Buffer.from(bytes)
  return JSON.parse(b.subarray(b.indexOf(10) + 1).toString()) as Manifest
}

async function manifestOf(s: Storage, id: string): Promise<Manifest> {
  return bodyOf(await s.get(id))
}

async function flip(s: Storage, key: string, at = 100): Promise<void> {
  const b = await s.get(key)
  await s.put(
    key,
    Uint8Array.from(b, (v, i) => (i === at ? v ^ 1 : v)),
  )
}

/** A store whose puts under one prefix wait at a gate the test opens: a commit frozen mid-way. */
function gated(inner: Storage, prefix: string): { storage: Storage; reached: Promise<void>; open: () => void } {
  let open!: () => void
  let reached!: () => void
  const gate = new Promise<void>((r) => (open = r))
  const reachedP = new Promise<void>((r) => (reached = r))
  const storage = Object.create(inner) as Storage
  storage.put = async (key, body, o) => {
    if (key.startsWith(prefix)) {
      reached()
      await gate
    }
    return inner.put(key, body, o)
  }
  return { storage, reached: reachedP, open }
}

describe.each(allBackends().map((b) => [b.name, b] as const))('trust on %s', (_n, backend: Backend) => {
  it('any safe-integer step round-trips and sorts; unsafe steps are refused at the call', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const now = Date.now()
    await cp.write(Buffer.from('a'), { step: now })
    await cp.write(Buffer.from('b'), { step: Number.MAX_SAFE_INTEGER })
    await cp.write(Buffer.from('c'), { step: 3 })
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.list()).map((c) => c.step)).toEqual([now, Number.MAX_SAFE_INTEGER, 3])
    expect(Buffer.from((await reader.read())!).toString()).toBe('c')
    for (const bad of [2 ** 53, -1, 1.5, Number.NaN, Infinity]) {
      expect(() => cp.writeAsync(Buffer.from('x'), { step: bad }), String(bad)).toThrow(/step must be a whole number/)
      await expect(cp.write(Buffer.from('x'), { step: bad })).rejects.toThrow(/step must be a whole number/)
    }
    expect(() => cp.writeAsync(Buffer.from('x'), { metadata: { n: 1n } as never })).toThrow(/metadata cannot be stored as JSON/)
    await cp.flush()
    expect((await reader.list()).length).toBe(3)
    // Garbage collection counts every one of them as live.
    expect((await collectGarbage(s, { minAgeMs: 0 })).deletedChunks).toBe(0)
    expect(Buffer.from((await reader.read())!).toString()).toBe('c')
  })

  it('a huge epoch left by another writer does not make later commits invisible', async () => {
    const s = await backend.open()
    const first = await Checkpointer.open(s, quiet)
    await first.write(Buffer.from('old'), { step: 1 })
    await s.put('writers/99999999-zzz.json', Buffer.from('{}'))
    const next = await Checkpointer.open(s, quiet)
    const info = await next.write(Buffer.from('new'), { step: 2 })
    expect(info.epoch).toBe(100_000_000)
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.latest())!.id).toBe(info.id)
    expect(Buffer.from((await reader.read())!).toString()).toBe('new')
    // At the very end of the range a writer says so instead of writing what nobody could read.
    await s.put(`writers/${Number.MAX_SAFE_INTEGER}-zzz.json`, Buffer.from('{}'))
    const last = await Checkpointer.open(s, quiet)
    await expect(last.write(Buffer.from('x'))).rejects.toThrow(/claims epoch 9007199254740991/)
  })

  it('damage to a shared chunk does not spread: a new writer uploads again what it has not verified', async () => {
    const s = await backend.open()
    const data = randomBytes(64 * KiB)
    const w1 = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const c1 = await w1.write(data, { step: 1 })
    const shared = chunkKey((await manifestOf(s, c1.id)).files[0]!.chunks[1]!.hash)
    await flip(s, shared)
    // The next attempt writes the same bytes without reading first (old code trusted the newest manifest).
    const w2 = await Checkpointer.open(s, { chunkSize: 16 * KiB, keep: latest(2), gc: { minAgeMs: 0 }, ...quiet })
    for (let step = 2; step <= 4; step++) await w2.write(data, { step })
    const reader = await Checkpointer.open(s, quiet)
    expect(sha((await reader.read())!)).toBe(sha(data))
    expect(reader.lastSkipped).toEqual([])
    // The re-upload repaired the shared chunk for everybody.
    expect(chunkIdOf(await s.get(shared))).toBe(shared.split('/').at(-1))
    expect(c1.step).toBe(1)
  })

  it('a read that finds a damaged chunk makes the next write repair it', async () => {
    const s = await backend.open()
    const data = randomBytes(48 * KiB)
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const c1 = await cp.write(data, { step: 1 })
    const victim = chunkKey((await manifestOf(s, c1.id)).files[0]!.chunks[0]!.hash)
    await s.delete(victim)
    expect(await cp.read()).toBeUndefined() // the only checkpoint is damaged
    expect(cp.lastSkipped.map((x) => x.id)).toEqual([c1.id])
    await cp.write(data, { step: 2 })
    expect(cp.lastUpload!.uploaded).toBe(16 * KiB) // exactly the chunk found missing
    expect(sha((await (await Checkpointer.open(s, quiet)).read())!)).toBe(sha(data))
  })

  it('retention never deletes the newest intact checkpoint because newer ones are damaged', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const good = randomBytes(32 * KiB)
    const c1 = await cp.write(good, { step: 1 })
    const c2 = await cp.write(randomBytes(32 * KiB), { step: 2 })
    const c3 = await cp.write(randomBytes(32 * KiB), { step: 3 })
    for (const c of [c2, c3]) await s.delete(chunkKey((await manifestOf(s, c.id)).files[0]!.chunks[0]!.hash))
    const r = await prune(s, latest(2))
    expect(r.deleted).toEqual([])
    expect(r.kept.map((k) => k.id)).toContain(c1.id)
    expect(sha((await (await Checkpointer.open(s, quiet)).read())!)).toBe(sha(good))
  })

  it('a newer checkpoint citing a good chunk with a wrong size does not count as intact for retention', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const good = randomBytes(20 * KiB)
    const c1 = await cp.write(good, { step: 1 })
    // The same chunk cited twice, once with its true size and once a byte short.
    const liar = structuredClone(await manifestOf(s, c1.id))
    const ref = liar.files[0]!.chunks[0]!
    liar.kind = 'files'
    liar.files.push({ path: 'short', size: ref.size - 1, chunks: [{ hash: ref.hash, size: ref.size - 1 }] })
    liar.totalSize += ref.size - 1
    liar.seq = 7
    liar.step = 7
    await s.put(manifestKey(liar), encodeManifest(liar))
    const r = await prune(s, latest(1))
    expect(r.kept.map((k) => k.id)).toContain(c1.id)
    expect(sha((await (await Checkpointer.open(s, quiet)).read(c1.id))!)).toBe(sha(good))
  })

  it('GC deletes nothing while a manifest cannot be read for sure; prune --drop-damaged is the explicit way out', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const a = randomBytes(32 * KiB)
    const c1 = await cp.write(a, { step: 1 })
    await cp.write(randomBytes(32 * KiB), { step: 2 })
    await flip(s, c1.id, 80)
    await s.put(`chunks/ab/ab${'0'.repeat(62)}`, Buffer.from('orphan'))
    const before = (await keys(s, 'chunks/')).sort()
    const g = await collectGarbage(s, { minAgeMs: 0 })
    expect(g.deletedChunks).toBe(0)
    expect(g.blockedBy).toEqual([expect.stringContaining(c1.id)])
    expect((await keys(s, 'chunks/')).sort()).toEqual(before)
    // A manifest under a name this version cannot parse blocks it too.
    const r = await prune(s, latest(5), undefined, { dropDamaged: true })
    expect(r.dropped.map((d) => d.id)).toEqual([c1.id])
    await s.put('manifests/99999999999999999-x.tpm', Buffer.from('from the future'))
    expect((await collectGarbage(s, { minAgeMs: 0 })).deletedChunks).toBe(0)
    await s.delete('manifests/99999999999999999-x.tpm')
    const g2 = await collectGarbage(s, { minAgeMs: 0 })
    expect(g2.skipped).toBeUndefined()
    expect(g2.deletedChunks).toBeGreaterThanOrEqual(1)
    expect(await (await Checkpointer.open(s, quiet)).read()).toBeDefined()
  })

  it('GC beside a commit in flight deletes none of its chunks, whatever minAgeMs', async () => {
    const inner = await backend.open()
    const g = gated(inner, 'manifests/')
    const cp = await Checkpointer.open(g.storage, { chunkSize: 16 * KiB, ...quiet })
    const data = randomBytes(64 * KiB)
    const writing = cp.write(data, { step: 1 })
    await g.reached // every chunk is stored, the manifest is not yet
    const gc = await collectGarbage(inner, { minAgeMs: 0, locks: { waitMs: 50 } })
    expect(gc.skipped).toMatch(/busy/)
    expect(gc.deletedChunks).toBe(0)
    g.open()
    await writing
    expect(sha((await (await Checkpointer.open(inner, quiet)).read())!)).toBe(sha(data))
    expect((await collectGarbage(inner, { minAgeMs: 0 })).deletedChunks).toBe(0)
  })

  it('a writer waits while GC holds the exclusive lock, then commits in full', async () => {
    const s = await backend.open()
    const held = await acquireExclusive(s, 'gctest')
    expect(held.lock).toBeDefined()
    let chunkPuts = 0
    let lockDeletes = 0
    let sawWaiting!: () => void
    const waiting = new Promise<void>((r) => (sawWaiting = r))
    const watched = Object.create(s) as Storage
    watched.put = (k, b, o) => ((chunkPuts += k.startsWith('chunks/') ? 1 : 0), s.put(k, b, o))
    watched.delete = async (k) => {
      await s.delete(k)
      if (k.startsWith('locks/shared-')) lockDeletes++
      if (lockDeletes === 1) sawWaiting()
    }
    const cp = await Checkpointer.open(watched, { chunkSize: 16 * KiB, ...quiet })
    const data = randomBytes(40 * KiB)
    const writing = cp.write(data, { step: 1 })
    await waiting // the writer withdrew its lock on seeing ours
    expect(chunkPuts).toBe(0)
    await held.lock!.release()
    await writing
    expect(chunkPuts).toBe(3)
    expect(sha((await cp.read())!)).toBe(sha(data))
  })

  it('stale locks of killed processes do not block GC forever, torn ones (empty after a power cut) included', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, quiet)
    await cp.write(Buffer.from('x'), { step: 1 })
    await s.put('locks/shared-deadwriter-0123456789abcdef.json', Buffer.from('{}'))
    const busy = await collectGarbage(s, { minAgeMs: 0, locks: { waitMs: 10 } })
    expect(busy.skipped).toMatch(/busy/)
    // Locks are not fsynced: one written just before a power cut can come back empty. It is judged
    // by its age like any other, neither taken for dead at once nor an error.
    const torn = await backend.open()
    await Checkpointer.open(torn, quiet).then(async (c) => (await c.write(Buffer.from('y'), { step: 1 }), c.close()))
    await torn.put('locks/shared-tornwriter-fedcba9876543210.json', new Uint8Array(0))
    expect((await collectGarbage(torn, { minAgeMs: 0, locks: { waitMs: 10 } })).skipped).toMatch(/busy/)
    // The store's clocks have one-second resolution on some backends: wait past a tiny stale limit.
    await new Promise((r) => setTimeout(r, 2100))
    const g = await collectGarbage(s, { minAgeMs: 0, locks: { staleMs: 1000, waitMs: 10 } })
    expect(g.skipped).toBeUndefined()
    expect(g.staleLocks).toBe(1)
    expect(await keys(s, 'locks/')).toEqual([])
    const t = await collectGarbage(torn, { minAgeMs: 0, locks: { staleMs: 1000, waitMs: 10 } })
    expect(t.skipped).toBeUndefined()
    expect(t.staleLocks).toBe(1)
    expect(await keys(torn, 'locks/')).toEqual([])
  })

  it('crafted manifests with impossible numbers or a borrowed name are damage, never a crash', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const good = randomBytes(20 * KiB)
    const c1 = await cp.write(good, { step: 1 })
    const real = await manifestOf(s, c1.id)
    const ref = real.files[0]!.chunks[0]!
    let seq = 10
    const craft = async (change: (m: Manifest) => void, why: string): Promise<void> => {
      const m = structuredClone(real)
      m.seq = ++seq
      m.step = seq
      change(m)
      const key = manifestKey({ epoch: m.epoch, seq: m.seq, step: m.step, writer: m.writer })
      await s.put(key, encodeManifest(m))
      const reader = await Checkpointer.open(s, quiet)
      expect(sha((await reader.read())!), why).toBe(sha(good))
      expect(
        reader.lastSkipped.map((x) => x.id),
        why,
      ).toEqual([key])
      const dst = mkdtempSync(path.join(tmpdir(), 'tp-craft-'))
      expect((await reader.restore(dst))!.info.id, why).toBe(c1.id)
      await s.delete(key)
    }
    await craft((m) => (m.files[0]!.size = -5), 'negative size')
    await craft((m) => (m.chunkSize = 1e12), 'huge chunkSize')
    await craft((m) => (m.files[0]!.chunks[0]!.size = 1e12), 'huge chunk')
    await craft((m) => (m.totalSize = 7), 'total does not add up')
    await craft((m) => m.files.push(structuredClone(m.files[0]!)), 'duplicate path')
    await craft((m) => {
      m.kind = 'files'
      m.files = [
        { path: 'a', size: 0, chunks: [] },
        { path: 'a/b', size: ref.size, chunks: [ref] },
      ]
      m.totalSize = ref.size
    }, 'a beside a/b')
    // A valid body stored under another checkpoint's name.
    const other = manifestKey({ epoch: real.epoch, seq: 50, step: 50, writer: real.writer })
    await s.put(other, encodeManifest(real))
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.latest())!.id).toBe(c1.id)
    expect(reader.lastSkipped.map((x) => x.id)).toEqual([other])
  })

  it('oversized and undersized chunk objects are damage', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const good = randomBytes(20 * KiB)
    await cp.write(good, { step: 1 })
    const c2 = await cp.write(randomBytes(20 * KiB), { step: 2 })
    const victim = chunkKey((await manifestOf(s, c2.id)).files[0]!.chunks[0]!.hash)
    const original = await s.get(victim)
    for (const [why, body] of [
      ['oversized', Buffer.concat([original, randomBytes(3 * 16 * KiB)])],
      ['one byte more', Buffer.concat([original, Buffer.from([0])])],
      ['undersized', original.subarray(0, 10)],
    ] as const) {
      await s.put(victim, body)
      for (const fresh of [true, false]) {
        const reader = fresh ? await Checkpointer.open(s, quiet) : cp
        expect(sha((await reader.read())!), why).toBe(sha(good))
        const dst = mkdtempSync(path.join(tmpdir(), 'tp-size-'))
        expect((await reader.restore(dst))!.info.step, why).toBe(1)
      }
    }
  })

  it('un-awaited concurrent writes commit in call order: the newest resolved write is the latest', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const writes = Array.from({ length: 8 }, (_, i) => cp.write(Buffer.from(`write ${i}`), { step: i }))
    cp.writeAsync(Buffer.from('async 8'), { step: 8 })
    const last = cp.write(Buffer.from('write 9'), { step: 9 })
    const infos = await Promise.all([...writes, last])
    expect(new Set(infos.map((i) => i.seq)).size).toBe(infos.length)
    expect(infos.map((i) => i.seq)).toEqual([...infos.map((i) => i.seq)].sort((a, b) => a - b))
    const reader = await Checkpointer.open(s, quiet)
    expect((await reader.latest())!.step).toBe(9)
    expect(Buffer.from((await reader.read())!).toString()).toBe('write 9')
    expect((await reader.list()).map((c) => c.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('verify reports a damaged newest manifest and a wrong-size reference to a good chunk', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const c1 = await cp.write(randomBytes(20 * KiB), { step: 1 })
    const c2 = await cp.write(randomBytes(20 * KiB), { step: 2 })
    expect((await verifyCheckpoints(s)).map((r) => r.problems)).toEqual([[]])
    await flip(s, c2.id, 90)
    const newest = await verifyCheckpoints(s)
    expect(newest.map((r) => r.id)).toEqual([c2.id])
    expect(newest[0]!.problems[0]).toMatch(/manifest/)
    // A manifest that cites c1's first chunk with the wrong size must not pass because c1's is right.
    const m = await manifestOf(s, c1.id)
    const liar = structuredClone(m)
    liar.seq = 40
    liar.step = 40
    liar.files[0]!.chunks[1]!.size = m.files[0]!.chunks[1]!.size - 1
    liar.files[0]!.size -= 1
    liar.totalSize -= 1
    const key = manifestKey(liar)
    await s.put(key, encodeManifest(liar))
    const all = await verifyCheckpoints(s, { all: true })
    expect(all.find((r) => r.id === c1.id)!.problems).toEqual([])
    expect(all.find((r) => r.id === key)!.problems.length).toBe(1)
  })

  it('restores only permission bits, restores 250-byte names, and sweeps temp files of killed restores', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
    const src = mkdtempSync(path.join(tmpdir(), 'tp-src-'))
    const long = 'n'.repeat(250)
    await fs.writeFile(path.join(src, long), 'long name')
    await fs.writeFile(path.join(src, 'tool'), 'x')
    await fs.chmod(path.join(src, 'tool'), 0o4755)
    await cp.save(src, { step: 1 })
    const dst = mkdtempSync(path.join(tmpdir(), 'tp-dst-'))
    // A dead process's leftover (its pid no longer runs) and a live one's.
    // (This process's own pid would not do for a live one: a name with it that none of its restores
    // in flight has is an earlier process's with the same pid, a restarted container's.)
    const dead = spawnSync(process.execPath, ['-e', '0']).pid
    const live = spawn('sleep', ['60'])
    await fs.writeFile(path.join(dst, `.tp-restore-${dead}-0badf00d`), randomBytes(4096))
    await fs.writeFile(path.join(dst, `.tp-restore-${live.pid}-0000beef`), 'theirs, in flight')
    await cp.restore(dst).finally(() => live.kill())
    expect(await fs.readFile(path.join(dst, long), 'utf8')).toBe('long name')
    expect((await fs.stat(path.join(dst, 'tool'))).mode & 0o7777).toBe(0o755)
    expect((await fs.readdir(dst)).sort()).toEqual([`.tp-restore-${live.pid}-0000beef`, long, 'tool'].sort())
  })

  it('a lock lost while the manifest went out: chunks are stored again, or the commit is undone when a file changed meanwhile', async () => {
    for (const changeFile of [false, true]) {
      const s = await backend.open()
      const src = mkdtempSync(path.join(tmpdir(), 'tp-lost-'))
      await fs.writeFile(path.join(src, 'big.bin'), randomBytes(40 * KiB))
      await fs.writeFile(path.join(src, 'small.txt'), 'v1')
      const cp0 = await Checkpointer.open(s, { chunkSize: 16 * KiB, ...quiet })
      const first = await cp0.save(src, { step: 1 })
      await cp0.close()
      // Step 2: while its manifest goes out, a "collector" takes the writer for dead (see the
      // helper). The file may change on disk at that moment.
      const { storage: spy, struck } = collectorStrikesDuringManifest(s, first.id, async () => {
        if (changeFile) await fs.writeFile(path.join(src, 'big.bin'), randomBytes(40 * KiB))
      })
      const cp = await Checkpointer.open(spy, { chunkSize: 16 * KiB, ...quiet })
      const dst = mkdtempSync(path.join(tmpdir(), 'tp-lost-out-'))
      if (!changeFile) {
        const info = await cp.save(src, { step: 2 })
        expect(struck()).toBe(true)
        // Everything the manifest needs was stored again: it verifies and restores.
        expect((await verifyCheckpoints(s)).map((r) => [r.id, r.problems])).toEqual([[info.id, []]])
        await (await Checkpointer.open(s, quiet)).restore(dst)
        expect(sha(await fs.readFile(path.join(dst, 'big.bin')))).toBe(sha(await fs.readFile(path.join(src, 'big.bin'))))
      } else {
        await expect(cp.save(src, { step: 2 })).rejects.toMatchObject({ code: 'LockLost' })
        // Undone: no manifest names chunks that are not there.
        expect(await keys(s, 'manifests/')).toEqual([])
      }
      await cp.close()
    }
  })
})
