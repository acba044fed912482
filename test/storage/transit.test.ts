import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { StorageError, type Storage } from '../../src/index.js'
import { gcsBackend, s3Backend, type Backend } from '../helpers/backends.js'
import { match, startFaultProxy, type FaultKind, type FaultProxy } from '../helpers/fault-proxy.js'
import { MiB, sha, keysOf } from '../helpers/common.js'

async function failure(p: Promise<unknown>): Promise<StorageError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  )
  expect(e, 'expected the operation to fail with a StorageError').toBeInstanceOf(StorageError)
  return e as StorageError
}

// Faults in transit (bodies cut, damaged, lost; stalls) between the real SDKs and the real test
// servers, through a real HTTP proxy. The stall timer is short so that a hang shows as a test
// timeout, never as a slow pass; no assertion depends on how long anything took.
describe.each([s3Backend, gcsBackend].map((f) => f()).map((b) => [b.name, b] as const))('faults in transit: %s', (_n, backend: Backend) => {
  let proxy: FaultProxy
  let s: Storage
  const retried: string[] = []
  const data = randomBytes(300 * 1024 + 7)
  const open = (o: { retries?: number; deadlineMs?: number; pageSize?: number } = {}): Promise<Storage> =>
    backend.open({
      endpoint: proxy.url,
      requestTimeoutMs: 1000,
      ...(o.pageSize ? { pageSize: o.pageSize } : {}),
      retry: {
        retries: o.retries ?? 6,
        minTimeoutMs: 5,
        maxTimeoutMs: 20,
        ...(o.deadlineMs ? { deadlineMs: o.deadlineMs } : {}),
        onRetry: (i) => retried.push(`${i.op}:${(i.error as StorageError).code}`),
      },
    })

  beforeAll(async () => {
    proxy = await startFaultProxy(backend.endpoint!)
    s = await open()
    await s.put('t/obj', data)
  })
  beforeEach(() => {
    retried.length = 0
    proxy.clearFaults()
    proxy.enforceConditionalCreates = false
  })
  afterAll(async () => {
    await s.close()
    await proxy.close()
  })

  for (const kind of ['closeEarly', 'truncate', 'corrupt'] as const satisfies readonly FaultKind[]) {
    it(`a download hit by ${kind} is retried and returns the exact bytes`, async () => {
      const before = proxy.served[kind]
      proxy.inject([kind, kind], match.download)
      const back = await s.get('t/obj')
      expect(proxy.served[kind]).toBe(before + 2)
      expect(back.byteLength).toBe(data.byteLength)
      expect(sha(back)).toBe(sha(data))
      expect(retried.filter((r) => r === 'get:Transient')).toHaveLength(2)
    })

    it(`a ranged read hit by ${kind} is retried and returns the exact range`, async () => {
      proxy.inject(kind, match.download)
      const back = await s.get('t/obj', { range: { offset: 1000, length: 50_000 } })
      expect(proxy.pending).toBe(0)
      // A flipped byte in a range has no checksum to meet (GCS and S3 give none for ranges): only
      // cut bodies are caught there. The checkpoint layer hashes what it reads.
      if (kind !== 'corrupt') expect(sha(back)).toBe(sha(data.subarray(1000, 51_000)))
      else expect(back.byteLength).toBe(50_000)
    })

    it(`a download that keeps failing with ${kind} ends in Transient (never data, never Unknown), naming backend, op and key`, async () => {
      const tight = await open({ retries: 2 })
      await tight.put('t/obj', data)
      proxy.inject([kind, kind, kind], match.download)
      const e = await failure(tight.get('t/obj'))
      expect(e.code).toBe('Transient')
      expect(e.message).toContain(backend.name)
      expect(e.message).toContain('get')
      expect(e.message).toContain('t/obj')
      await tight.close()
    })

    it(`a list page hit by ${kind} is retried and the listing is complete`, async () => {
      const paged = await open({ pageSize: 4 })
      const keys = Array.from({ length: 10 }, (_, i) => `l${kind}/${String(i).padStart(2, '0')}`)
      for (const k of keys) await paged.put(k, Buffer.from(k))
      proxy.inject(kind, match.list)
      const listed: string[] = []
      for await (const o of paged.list(`l${kind}/`)) {
        listed.push(o.key)
        if (listed.length === 4) proxy.inject(kind, match.list) // a later page too
      }
      expect(listed).toEqual(keys)
      expect(proxy.pending).toBe(0)
      await paged.close()
    })
  }

  it('a download into the caller buffer survives a cut body and fills it exactly', async () => {
    proxy.inject('closeEarly', match.download, { keep: 1000 })
    const into = new Uint8Array(data.byteLength + 10)
    const back = await s.get('t/obj', { into })
    expect(back.buffer).toBe(into.buffer)
    expect(sha(back)).toBe(sha(data))
  })

  it('a stalled response body (headers sent, then nothing) is abandoned and retried', async () => {
    // closeEarly with keep 0 leaves headers promising a body that never comes on GCS' HTTP stack;
    // a plain stall never answers at all. Both must end.
    proxy.inject('stall', match.download)
    expect(sha(await s.get('t/obj'))).toBe(sha(data))
    proxy.inject('stall', match.list)
    expect(await keysOf(s, 't/')).toEqual(['t/obj'])
  })

  it('every operation ends within its deadline even when each attempt stalls', async () => {
    const doomed = await open({ retries: 50, deadlineMs: 2500 })
    for (let i = 0; i < 60; i++) proxy.inject('stall', match.download)
    const e = await failure(doomed.get('t/obj'))
    expect(e.code).toBe('Transient')
    expect(e.message).toMatch(/deadline/)
    proxy.clearFaults()
    await doomed.close()
  }, 30_000)

  describe('lost response of a create-if-absent put, against enforced conditional creates', () => {
    for (const [label, size] of [
      ['simple', 64 * 1024],
      ['multipart/resumable', 9 * MiB + 5],
    ] as const) {
      it(`(${label}) our own object found by the retry is a success, not AlreadyExists`, async () => {
        proxy.enforceConditionalCreates = true
        const body = randomBytes(size)
        const lost = proxy.served.loseResponse
        const refused = proxy.preconditionFailed
        proxy.inject('loseResponse', match.finalUpload)
        const info = await s.put(`cc/${label}`, body, { ifAbsent: true })
        expect(proxy.served.loseResponse).toBe(lost + 1)
        // The retry really met 412 (the object existed): this is the path under test.
        expect(proxy.preconditionFailed).toBeGreaterThan(refused)
        expect(info.size).toBe(size)
        expect(sha(await s.get(`cc/${label}`))).toBe(sha(body))
        // Someone else's create of the same key still fails, and the object stays ours.
        const e = await failure(s.put(`cc/${label}`, randomBytes(100), { ifAbsent: true }))
        expect(e.code).toBe('AlreadyExists')
        expect(sha(await s.get(`cc/${label}`))).toBe(sha(body))
      }, 60_000)
    }

    it('a lost response while another writer already holds the key is still AlreadyExists', async () => {
      proxy.enforceConditionalCreates = true
      await s.put('cc/taken', Buffer.from('theirs'), { ifAbsent: true })
      proxy.inject('loseResponse', match.finalUpload)
      const e = await failure(s.put('cc/taken', Buffer.from('mine'), { ifAbsent: true }))
      expect(e.code).toBe('AlreadyExists')
      expect(Buffer.from(await s.get('cc/taken')).toString()).toBe('theirs')
      proxy.clearFaults()
    })

    it('a garbled response to the ownership check is retried, not taken as someone else', async () => {
      proxy.enforceConditionalCreates = true
      proxy.inject('loseResponse', match.finalUpload)
      // The HEAD (S3) or metadata GET (GCS) after the 412 comes back cut short once.
      proxy.inject('reset', (req) => (backend.name === 's3' ? req.method === 'HEAD' : match.gcsMetadata(req)))
      const info = await s.put('cc/checked', Buffer.from('payload'), { ifAbsent: true })
      expect(info.size).toBe(7)
      expect(proxy.pending).toBe(0)
    })
  })
})
