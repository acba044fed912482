import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pLimit from 'p-limit'
import { StorageError, type Storage } from '../../src/index.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { MiB, sha, keysOf } from '../helpers/common.js'

async function expectCode(p: Promise<unknown>, code: string): Promise<StorageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, `expected a StorageError with code ${code}`).toBeInstanceOf(StorageError)
  expect((err as StorageError).code).toBe(code)
  return err as StorageError
}

// One suite, unchanged for every driver: what differs is only how the backend is opened. S3 and
// GCS go through a proxy that enforces conditional creates as the real services do (the test
// servers ignore them); everything else it forwards untouched.
describe.each(allBackends().map((b) => [b.name, b] as const))('Storage conformance: %s', (_name, backend: Backend) => {
  let s: Storage
  beforeAll(async () => {
    s = await backend.open({ enforceConditionalCreates: true })
  })
  afterAll(async () => {
    await s.close()
    await closeEnforcingProxies()
  })

  it('round-trips empty, small and binary objects', async () => {
    const small = randomBytes(1000)
    await s.put('a/empty', new Uint8Array(0))
    await s.put('a/small.bin', small)
    expect((await s.get('a/empty')).byteLength).toBe(0)
    expect(Buffer.from(await s.get('a/small.bin')).equals(small)).toBe(true)
    const h = await s.head('a/small.bin')
    expect(h?.size).toBe(1000)
    expect(h?.key).toBe('a/small.bin')
  })

  it('round-trips a multipart-sized object from a streaming body, with progress', async () => {
    const big = randomBytes(20 * MiB + 12345)
    const events: number[] = []
    const info = await s.put(
      'big/obj',
      {
        size: big.byteLength,
        async *open() {
          for (let o = 0; o < big.byteLength; o += 3 * MiB) yield big.subarray(o, Math.min(big.byteLength, o + 3 * MiB))
        },
      },
      { onProgress: (p) => events.push(p.loaded) },
    )
    expect(info.size).toBe(big.byteLength)
    expect(events.length).toBeGreaterThan(0)
    expect(events.at(-1)).toBe(big.byteLength)
    for (let i = 1; i < events.length; i++) expect(events[i]!).toBeGreaterThanOrEqual(events[i - 1]!)
    expect(sha(await s.get('big/obj'))).toBe(sha(big))
  }, 120_000)

  it('batch puts are readable at once and made durable together by sync()', async () => {
    await Promise.all(['b/1', 'b/2', 'b/3'].map((k) => s.put(k, Buffer.from(k), { batch: true })))
    await s.sync()
    expect(await keysOf(s, 'b/')).toEqual(['b/1', 'b/2', 'b/3'])
    expect(Buffer.from(await s.get('b/2')).toString()).toBe('b/2')
  })

  it('reads byte ranges, clamped at the end', async () => {
    const data = Buffer.from('0123456789abcdef')
    await s.put('r/x', data)
    expect(Buffer.from(await s.get('r/x', { range: { offset: 3, length: 4 } })).toString()).toBe('3456')
    expect(Buffer.from(await s.get('r/x', { range: { offset: 10 } })).toString()).toBe('abcdef')
    expect(Buffer.from(await s.get('r/x', { range: { offset: 14, length: 100 } })).toString()).toBe('ef')
    expect((await s.get('r/x', { range: { offset: 16, length: 4 } })).byteLength).toBe(0)
  })

  it('overwrites by default and reports missing objects as NotFound', async () => {
    await s.put('o/k', Buffer.from('one'))
    await s.put('o/k', Buffer.from('two'))
    expect(Buffer.from(await s.get('o/k')).toString()).toBe('two')
    expect(await s.head('o/missing')).toBeUndefined()
    const e = await expectCode(s.get('o/missing'), 'NotFound')
    expect(e.message).toContain(backend.name)
    expect(e.message).toContain('o/missing')
  })

  it('create-if-absent writes when absent', async () => {
    await s.put('c/new', Buffer.from('first'), { ifAbsent: true })
    expect(Buffer.from(await s.get('c/new')).toString()).toBe('first')
  })

  it('create-if-absent refuses an existing object and keeps it', async () => {
    expect(s.capabilities.conditionalCreate).toBe(true)
    await s.put('c/once', Buffer.from('first'), { ifAbsent: true })
    await expectCode(s.put('c/once', Buffer.from('second'), { ifAbsent: true }), 'AlreadyExists')
    // The same bytes from another put() call are someone else's object too.
    await expectCode(s.put('c/once', Buffer.from('first'), { ifAbsent: true }), 'AlreadyExists')
    expect(Buffer.from(await s.get('c/once')).toString()).toBe('first')
  })

  it('create-if-absent: of 8 racing writers exactly one wins', async () => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => s.put('c/race', Buffer.from(`w${i}`), { ifAbsent: true })))
    const won = results.filter((r) => r.status === 'fulfilled')
    expect(won).toHaveLength(1)
    for (const r of results) if (r.status === 'rejected') expect((r.reason as StorageError).code).toBe('AlreadyExists')
    const winner = results.findIndex((r) => r.status === 'fulfilled')
    expect(Buffer.from(await s.get('c/race')).toString()).toBe(`w${winner}`)
  })

  it('lists more than 1000 keys across pages, in key order, by prefix', async () => {
    const paged = await backend.open({ pageSize: 250 })
    const n = 1100
    const keys = Array.from({ length: n }, (_, i) => `many/${String(i).padStart(5, '0')}`)
    await pLimit(32).map(keys, (k) => paged.put(k, Buffer.from(k)))
    await paged.put('manyother/x', Buffer.from('x'))
    const listed = await keysOf(paged, 'many/')
    expect(listed).toEqual(keys)
    expect(await keysOf(paged, 'many')).toHaveLength(n + 1)
    expect(await keysOf(paged, 'many/001')).toHaveLength(100)
    await paged.deleteMany(keys)
    expect(await keysOf(paged, 'many/')).toEqual([])
    expect(await keysOf(paged)).toEqual(['manyother/x'])
    await paged.close()
  }, 180_000)

  it('deletes one and many, idempotently', async () => {
    await s.put('d/1', Buffer.from('1'))
    await s.put('d/2', Buffer.from('2'))
    await s.put('d/3', Buffer.from('3'))
    await s.delete('d/1')
    await s.delete('d/1')
    expect(await s.head('d/1')).toBeUndefined()
    await s.deleteMany(['d/2', 'd/3', 'd/never'])
    expect(await keysOf(s, 'd/')).toEqual([])
  })

  it('refuses hostile keys before touching the backend', async () => {
    const hostile = ['../escape', 'a/../../b', '/abs', 'a//b', 'a/', '', 'nul\u0000x', 'back\\slash', 'C:/x', './x', 'a/./b', 'x'.repeat(2000), 'new\nline']
    for (const k of hostile) {
      await expectCode(s.put(k, Buffer.from('x')), 'InvalidKey')
      await expectCode(s.get(k), 'InvalidKey')
      await expectCode(s.delete(k), 'InvalidKey')
    }
    const names = await keysOf(s)
    expect(names.some((k) => k.includes('escape') || k.includes('abs'))).toBe(false)
  })

  it('an object larger than the into buffer is a SizeMismatch error, not a RangeError', async () => {
    await s.put('z/ten', Buffer.from('0123456789'))
    const e = await expectCode(s.get('z/ten', { into: new Uint8Array(4) }), 'SizeMismatch')
    expect(e.message).toContain('z/ten')
    const into = new Uint8Array(16)
    const got = await s.get('z/ten', { into })
    expect(got.buffer).toBe(into.buffer)
    expect(Buffer.from(got).toString()).toBe('0123456789')
    expect(Buffer.from(await s.get('z/ten', { into: new Uint8Array(3), range: { offset: 2, length: 3 } })).toString()).toBe('234')
  })

  it('keeps names of 255 bytes (NAME_MAX) in the last segment', async () => {
    for (const n of [240, 250, 255]) {
      const k = `long/${'n'.repeat(n - 4)}.bin`
      await s.put(k, Buffer.from(String(n)))
      await s.put(k, Buffer.from(String(n)), { batch: true })
      await s.sync()
      expect(Buffer.from(await s.get(k)).toString()).toBe(String(n))
    }
    expect(await keysOf(s, 'long/')).toHaveLength(3)
  })

  it('sweep() is offered and leaves a storage without leftovers untouched', async () => {
    await s.put('w/kept', Buffer.from('k'))
    const r = await s.sweep!({ olderThanMs: 0 })
    expect(r).toMatchObject({ removed: 0, bytes: 0, items: [] })
    expect(await keysOf(s, 'w/')).toEqual(['w/kept'])
  })

  it('keeps unicode and spaces in keys intact', async () => {
    const k = 'u/ünï côdé/😀 file.bin'
    await s.put(k, Buffer.from('u'))
    expect(await keysOf(s, 'u/')).toEqual([k])
    expect(Buffer.from(await s.get(k)).toString()).toBe('u')
  })
})
