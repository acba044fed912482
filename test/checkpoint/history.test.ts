import { afterAll, describe, expect, it } from 'vitest'
import { Checkpointer, FencedError, latest, type Storage } from '../../src/index.js'
import { compareNames, listingStartFor, manifestKey, parseManifestKey, type ManifestName } from '../../src/format/manifest.js'
import { HINT_KEY, readHint } from '../../src/checkpoint/recent.js'
import { plantChunk, plantHistory, plantManifest } from '../../bench/plant.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'

// Commit, open and latest() cost independent of history (issue 12, item 1), and the hint they rely
// on never trusted: whatever it says, every reader resolves the newest manifest stored.

const quiet = { onWarning: () => {}, repro: false as const }
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : Buffer.from(b).toString())

async function keys(s: Storage, prefix: string, startAfter?: string): Promise<string[]> {
  const out: string[] = []
  for await (const o of s.list(prefix, startAfter === undefined ? {} : { startAfter })) out.push(o.key)
  return out
}

/** The newest manifest by (epoch, seq, writer) over a full listing: what every reader must resolve. */
async function oracle(s: Storage): Promise<ManifestName | undefined> {
  const names = (await keys(s, 'manifests/')).map(parseManifestKey).filter((n): n is ManifestName => n !== undefined)
  return names.sort(compareNames).at(-1)
}

/** Counts list calls and the objects they return. */
function counting(inner: Storage): { storage: Storage; listed: () => number; reset: () => void } {
  let listed = 0
  const storage = Object.create(inner) as Storage
  storage.list = (prefix, o) => {
    const it = inner.list(prefix, o)
    return (async function* () {
      for await (const x of it) {
        listed++
        yield x
      }
    })()
  }
  return { storage, listed: () => listed, reset: () => (listed = 0) }
}

async function setHint(s: Storage, body: string): Promise<void> {
  await s.put(HINT_KEY, Buffer.from(body))
}

afterAll(closeEnforcingProxies)

describe.each(allBackends().map((b) => [b.name, b] as const))('history on %s', (_n, backend: Backend) => {
  it('list startAfter returns only keys sorting strictly after it, across pages', async () => {
    const s = await backend.open({ pageSize: 2 })
    for (const k of ['a/1', 'a/2', 'a/3', 'a/30', 'a/4', 'b/1']) await s.put(k, Buffer.from(k))
    expect(await keys(s, 'a/', 'a/2')).toEqual(['a/3', 'a/30', 'a/4'])
    expect(await keys(s, 'a/', 'a/25')).toEqual(['a/3', 'a/30', 'a/4'])
    expect(await keys(s, 'a/', 'a/3')).toEqual(['a/30', 'a/4'])
    expect(await keys(s, 'a/', '0')).toEqual(['a/1', 'a/2', 'a/3', 'a/30', 'a/4'])
    expect(await keys(s, 'a/', 'a/4')).toEqual([])
    expect(await keys(s, 'a/', 'z')).toEqual([])
    expect(await keys(s, '', 'a/4')).toEqual(['b/1'])
    await s.close()
  })

  it('list startAfter through nested keys: whole subtrees before it are skipped, none after it', async () => {
    const s = await backend.open({ pageSize: 2 })
    const all = ['c/1/x', 'c/10/y', 'c/2/z', 'c/2/zz', 'c/2/zz/deep', 'c/3', 'd/1/2/3']
    for (const k of all.filter((k) => !all.some((o) => o.startsWith(`${k}/`)))) await s.put(k, Buffer.from(k))
    const stored = all.filter((k) => !all.some((o) => o.startsWith(`${k}/`)))
    for (const after of ['', 'c', 'c/', 'c/1', 'c/1/', 'c/1/x', 'c/10', 'c/15', 'c/2', 'c/2/', 'c/2/z', 'c/2/zy', 'c/2/zz/', 'c/3', 'c/4', 'd/1/2/2', 'd/1/2/3', 'e']) {
      const want = stored.filter((k) => k > after)
      expect(await keys(s, '', after), `startAfter ${JSON.stringify(after)}`).toEqual(want)
      expect(await keys(s, 'c/', after), `c/ startAfter ${JSON.stringify(after)}`).toEqual(want.filter((k) => k.startsWith('c/')))
    }
    await s.close()
  })

  it('both key layouts in one location: a listing from the start for any name finds every newer name, and every reader the same newest', async () => {
    // Earlier releases wrote every manifest flat under manifests/; this one groups them. Names of
    // both layouts, of several epochs, writers and groups, interleaved the way mixed writers leave them.
    const s = await backend.open({ pageSize: 7 })
    const files = await plantChunk(s, Buffer.from('mixed'))
    let seed = 7
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), (seed >>> 16) % n)
    const planted: ManifestName[] = []
    const seen = new Set<string>()
    for (let i = 0; i < 60; i++) {
      const n = { epoch: 1 + rnd(3), seq: rnd(350), step: i, writer: ['a', 'b', 'zz'][rnd(3)]! }
      const id = `${n.epoch}-${n.seq}-${n.writer}`
      if (seen.has(id)) continue
      seen.add(id)
      const grouped = manifestKey(n)
      const flat = `manifests/${grouped.split('/')[2]}`
      const key = rnd(2) ? grouped : flat
      expect(parseManifestKey(key), key).toMatchObject({ ...n, key })
      await s.put(key, await s.get(await plantManifest(s, files, n)))
      if (key !== grouped) await s.delete(grouped)
      planted.push({ ...n, key })
    }
    planted.sort(compareNames)
    expect(new Set(planted.map((n) => n.key.split('/').length))).toEqual(new Set([2, 3]))
    expect((await keys(s, 'manifests/')).length).toBe(planted.length)
    for (const [i, n] of planted.entries()) {
      const listed = new Set(await keys(s, 'manifests/', listingStartFor(n)))
      for (const newer of planted.slice(i)) expect(listed.has(newer.key), `${newer.key} listed from ${n.key}`).toBe(true)
    }
    const newest = planted.at(-1)!
    for (const n of planted.filter((_, i) => i % 5 === 0 || i >= planted.length - 3)) {
      await setHint(s, JSON.stringify({ v: 1, key: n.key }))
      expect((await readHint(s))?.key).toBe(n.key)
      expect((await (await Checkpointer.open(s, quiet)).latest())?.id, `hint ${n.key}`).toBe(newest.key)
    }
    // A new writer takes the epoch above all of them and comes out newest.
    const w = await Checkpointer.open(s, quiet)
    const info = await w.write(Buffer.from('after mixed'))
    expect(info.epoch).toBe(newest.epoch + 1)
    expect((await oracle(s))!.key).toBe(info.id)
    expect(info.id.split('/').length).toBe(3)
    await s.close()
  })

  it('open, a commit and latest() list the same number of objects at 400 checkpoints as at 10', async () => {
    const cost = async (history: number): Promise<number[]> => {
      const inner = await backend.open()
      await plantHistory(inner, history)
      // The first writer of this version finds no hint and lists everything, once; then it's a hint.
      const first = await Checkpointer.open(inner, quiet)
      await first.write(Buffer.from('first'))
      const { storage, listed, reset } = counting(inner)
      const out: number[] = []
      reset()
      const cp = await Checkpointer.open(storage, quiet)
      out.push(listed())
      reset()
      await cp.write(Buffer.from('second'))
      out.push(listed())
      reset()
      const info = await cp.latest()
      out.push(listed())
      expect(info?.id).toBe((await oracle(inner))?.key)
      reset()
      await cp.write(Buffer.from('third'))
      out.push(listed())
      expect(text(await cp.read())).toBe('third')
      expect(info?.step).toBe(history + 2)
      await inner.close()
      return out
    }
    const small = await cost(10)
    const large = await cost(400)
    console.log(`${backend.name}: objects listed by open, write, latest, write at 10 and 400 checkpoints: ${small} / ${large}`)
    expect(large).toEqual(small)
    // Each operation lists a handful of objects (markers, locks), never the history.
    for (const n of large) expect(n).toBeLessThan(10)
  })

  it('retention after a commit reads back no manifest it just wrote, and keeps what the policy says', async () => {
    const inner = await backend.open()
    let manifestGets = 0
    const storage = Object.create(inner) as Storage
    storage.get = (key, o) => {
      if (key.startsWith('manifests/')) manifestGets++
      return inner.get(key, o)
    }
    const cp = await Checkpointer.open(storage, { ...quiet, keep: latest(2) })
    const infos = []
    for (let i = 0; i < 4; i++) infos.push(await cp.write(Buffer.from(`step ${i}`)))
    expect(manifestGets).toBe(0)
    expect((await cp.list()).map((c) => c.id)).toEqual(infos.slice(2).map((c) => c.id))
    expect(text(await cp.read())).toBe('step 3')
    await cp.close()
    // A new process reads them from the store.
    const other = await Checkpointer.open(inner, quiet)
    expect((await other.list()).map((c) => c.step)).toEqual([2, 3])
    await inner.close()
  })

  it('a stale, forged or garbled hint never hides the newest checkpoint', async () => {
    const s = await backend.open()
    await plantHistory(s, 5, { data: Buffer.from('old') })
    const oldest = manifestKey({ epoch: 1, seq: 1, step: 1, writer: 'planted' })
    let writer = await Checkpointer.open(s, quiet)
    let newest = await writer.write(Buffer.from('step 99'), { step: 99 })
    expect((await readHint(s))?.key).toBe(newest.id)
    const hints: [string, (newest: string) => string][] = [
      ['stale (oldest manifest)', () => JSON.stringify({ v: 1, key: oldest })],
      ['a manifest that does not exist, past every real one', () => JSON.stringify({ v: 1, key: manifestKey({ epoch: 9_999_999, seq: 1, step: 1, writer: 'zz' }) })],
      ['garbled', () => 'not json{'],
      ['truncated', (k) => JSON.stringify({ v: 1, key: k }).slice(0, -9)],
      ['an unknown version', (k) => JSON.stringify({ v: 2, key: k })],
      ['a chunk key', () => JSON.stringify({ v: 1, key: 'chunks/ab/abcd' })],
      ['an escaping key', () => JSON.stringify({ v: 1, key: '../../etc/passwd' })],
      ['a non-canonical spelling of the newest', (k) => JSON.stringify({ v: 1, key: k.replace('manifests/', 'manifests/0') })],
      ['null', () => 'null'],
      ['huge', (k) => JSON.stringify({ v: 1, key: k, pad: 'x'.repeat(100_000) })],
      ['an empty object', () => ''],
    ]
    for (const [what, hint] of hints) {
      await setHint(s, hint(newest.id))
      const readers = [await Checkpointer.open(s, quiet), await Checkpointer.open(s, quiet)]
      for (const r of readers) {
        expect((await r.latest())?.id, what).toBe(newest.id)
        expect(text(await r.read()), what).toBe(`step ${newest.step}`)
        expect(r.prevExists(), what).toBe(true)
      }
      // A writer opened under this hint continues from the newest step, takes the epoch above it,
      // and its commit is the newest for everyone; the writer before it is fenced.
      await setHint(s, hint(newest.id))
      const next = await Checkpointer.open(s, quiet)
      const info = await next.write(Buffer.from(`step ${newest.step + 1}`))
      expect([info.epoch, info.step], what).toEqual([newest.epoch + 1, newest.step + 1])
      expect((await oracle(s))!.key, what).toBe(info.id)
      await expect(writer.write(Buffer.from('zombie')), what).rejects.toBeInstanceOf(FencedError)
      ;[writer, newest] = [next, info]
    }
    await s.close()
  })

  it('a huge forged hint costs one small read, never a download of it', async () => {
    const s = await backend.open()
    const w = await Checkpointer.open(s, quiet)
    const real = await w.write(Buffer.from('real'))
    await setHint(s, JSON.stringify({ v: 1, key: real.id, pad: 'x'.repeat(2_000_000) }))
    let hintBytes = 0
    const spy = Object.create(s) as Storage
    spy.get = async (key, o) => {
      const out = await s.get(key, o)
      if (key === HINT_KEY) hintBytes += out.byteLength
      return out
    }
    expect((await (await Checkpointer.open(spy, quiet)).latest())?.id).toBe(real.id)
    expect(hintBytes).toBeGreaterThan(0)
    expect(hintBytes).toBeLessThanOrEqual(2 * 4097)
    await s.close()
  })

  it('numbers past the ordered bounds are never listed from: a wider newer key sorting before the hint is found', async () => {
    // Epoch 100,000,000 has 9 digits and sorts, byte for byte, before epoch 20,000,000: a listing
    // after a hint naming the latter would miss the newer checkpoint.
    const s = await backend.open()
    const files = await plantChunk(s, Buffer.from('x'))
    const lower = await plantManifest(s, files, { epoch: 20_000_000, seq: 1, step: 1, writer: 'a' })
    const wider = await plantManifest(s, files, { epoch: 100_000_000, seq: 1, step: 2, writer: 'a' })
    expect(wider < lower).toBe(true)
    await setHint(s, JSON.stringify({ v: 1, key: lower }))
    expect(await readHint(s)).toBeUndefined()
    expect((await (await Checkpointer.open(s, quiet)).latest())?.id).toBe(wider)
    // The same within one epoch: seq 1,000,000,000,000 sorts before seq 200,000,000,000.
    const lowSeq = await plantManifest(s, files, { epoch: 100_000_001, seq: 200_000_000_000, step: 3, writer: 'a' })
    const wideSeq = await plantManifest(s, files, { epoch: 100_000_001, seq: 1_000_000_000_000, step: 4, writer: 'a' })
    expect(wideSeq < lowSeq).toBe(true)
    await setHint(s, JSON.stringify({ v: 1, key: lowSeq }))
    const r = await Checkpointer.open(s, quiet)
    expect((await r.latest())?.id).toBe(wideSeq)
    // A writer past the bounds lists everything, and still comes out newest.
    const w = await Checkpointer.open(s, quiet)
    const info = await w.write(Buffer.from('after'))
    expect(info.epoch).toBe(100_000_002)
    expect(info.id).toBe((await oracle(s))!.key)
    expect(text(await (await Checkpointer.open(s, quiet)).read())).toBe('after')
    await s.close()
  })

  it('a hint just inside the bounds lists from the hint, and a wider epoch still sorts after it', async () => {
    const s = await backend.open()
    const files = await plantChunk(s, Buffer.from('x'))
    const edge = await plantManifest(s, files, { epoch: 9_999_999, seq: 99_999_999_999, step: 1, writer: 'a' })
    await setHint(s, JSON.stringify({ v: 1, key: edge }))
    expect((await readHint(s))?.key).toBe(edge)
    const wide = await plantManifest(s, files, { epoch: 10_000_000_000, seq: 1, step: 2, writer: 'a' })
    const sameEpochWiderSeq = await plantManifest(s, files, { epoch: 9_999_999, seq: 100_000_000_000, step: 3, writer: 'a' })
    expect(sameEpochWiderSeq > edge && wide > edge).toBe(true)
    expect((await (await Checkpointer.open(s, quiet)).latest())?.id).toBe(wide)
    await s.delete(wide)
    expect((await (await Checkpointer.open(s, quiet)).latest())?.id).toBe(sameEpochWiderSeq)
    await s.close()
  })

  it('falls back past damaged checkpoints from the hint into the older history', async () => {
    const s = await backend.open()
    await plantHistory(s, 5, { data: Buffer.from('old') })
    const w = await Checkpointer.open(s, quiet)
    const good = await w.write(Buffer.from('good'))
    const bad = await w.write(Buffer.from('bad'))
    expect((await readHint(s))?.key).toBe(bad.id)
    const damage = async (key: string): Promise<void> => {
      const b = await s.get(key)
      await s.put(
        key,
        Uint8Array.from(b, (v, i) => (i === 80 ? v ^ 1 : v)),
      )
    }
    await damage(bad.id)
    const r1 = await Checkpointer.open(s, quiet)
    expect(text(await r1.read())).toBe('good')
    expect(r1.lastSkipped.map((x) => x.id)).toEqual([bad.id])
    await damage(good.id)
    const r2 = await Checkpointer.open(s, quiet)
    expect(text(await r2.read())).toBe('old')
    expect(r2.lastSkipped.map((x) => x.id)).toEqual([bad.id, good.id])
    // The hinted manifest deleted (as retention in another process might): nothing is hidden.
    await s.delete(bad.id)
    await s.delete(good.id)
    expect((await (await Checkpointer.open(s, quiet)).latest())?.step).toBe(5)
    await s.close()
  })

  it('fencing sees a newer epoch known only by its manifest, and a newer writer of the same epoch', async () => {
    const s = await backend.open()
    await plantHistory(s, 3)
    const w = await Checkpointer.open(s, { ...quiet, writerId: 'm' })
    const mine = await w.write(Buffer.from('a'))
    expect([mine.epoch, mine.seq]).toEqual([2, 1])
    expect((await w.write(Buffer.from('b'))).seq).toBe(2)
    const files = await plantChunk(s, Buffer.from('y'))
    await plantManifest(s, files, { epoch: mine.epoch + 1, seq: 1, step: 1, writer: 'a' })
    await expect(w.write(Buffer.from('c'))).rejects.toBeInstanceOf(FencedError)

    const s2 = await backend.open()
    const w2 = await Checkpointer.open(s2, { ...quiet, writerId: 'm' })
    const first = await w2.write(Buffer.from('a'))
    await s2.put(`writers/${String(first.epoch).padStart(8, '0')}-n.json`, Buffer.from('{}'))
    await expect(w2.write(Buffer.from('b'))).rejects.toBeInstanceOf(FencedError)
    await s.close()
    await s2.close()
  })

  it('a commit exceeds the seqs of its epoch that another writer of the same epoch left after its own', async () => {
    const s = await backend.open()
    const w = await Checkpointer.open(s, { ...quiet, writerId: 'z' })
    const first = await w.write(Buffer.from('a'))
    // A lower writer id of the same epoch (it lost the race and is fenced) committed seq 7 meanwhile.
    const files = await plantChunk(s, Buffer.from('other'))
    await plantManifest(s, files, { epoch: first.epoch, seq: 7, step: 50, writer: 'a' })
    const next = await w.write(Buffer.from('b'))
    expect(next.seq).toBe(8)
    expect((await oracle(s))!.key).toBe(next.id)
    expect(text(await (await Checkpointer.open(s, quiet)).read())).toBe('b')
    await s.close()
  })

  it('names in another spelling of the same numbers are ignored by every reader alike', async () => {
    const s = await backend.open()
    const w = await Checkpointer.open(s, quiet)
    const real = await w.write(Buffer.from('real'))
    const odd = real.id.replace('manifests/', 'manifests/0')
    await s.put(odd, await s.get(real.id))
    expect(parseManifestKey(odd)).toBeUndefined()
    // The right name in another group's directory would sort apart from its numbers too.
    const [, group, leaf] = real.id.split('/')
    expect(parseManifestKey(`manifests/${leaf}`)).toMatchObject({ seq: real.seq })
    const moved = `manifests/${group!.replace(/\d$/, (d) => String((Number(d) + 1) % 10))}/${leaf}`
    expect(parseManifestKey(moved)).toBeUndefined()
    await s.put(moved, await s.get(real.id))
    const r = await Checkpointer.open(s, quiet)
    expect((await r.latest())?.id).toBe(real.id)
    expect((await r.list()).map((i) => i.id)).toEqual([real.id])
    await s.close()
  })
})
