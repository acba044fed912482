// The S3 upload thread (src/storage/s3-put-thread.ts): bodies in shared memory go from a worker
// thread with its own client. Everything here runs against the real S3 test server, through the
// fault proxy where a fault is needed, and checks that the thread keeps every guarantee of the
// calling thread's path: exact bytes, retries, create-if-absent, error codes, no hang, no early exit.
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { StorageError } from '../../src/index.js'
import { S3Storage } from '../../src/storage/s3.js'
import { S3PutThread } from '../../src/storage/s3-put-thread.js'
import { allBackends, s3Backend, s3Config, S3_BUCKET } from '../helpers/backends.js'
import { MiB } from '../helpers/common.js'
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js'

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')
const unique = (): string => `pt-${randomBytes(4).toString('hex')}`

/** `n` random bytes in shared memory, as a commit's chunks are. */
function shared(n: number): Uint8Array {
  const b = new Uint8Array(new SharedArrayBuffer(n))
  b.set(randomBytes(n))
  return b
}

describe.each(allBackends().map((b) => [b.name, b] as const))('bodies in shared memory: %s', (_name, backend) => {
  it('round-trip exactly, at every size a commit sends, and a create-if-absent of an existing key is AlreadyExists', async () => {
    const s = await backend.open({ enforceConditionalCreates: true })
    try {
      for (const size of [0, 1, MiB - 1, MiB, 8 * MiB]) {
        const body = shared(size)
        await s.put(`sab/${size}`, body)
        expect(sha(await s.get(`sab/${size}`)), `${size}`).toBe(sha(body))
      }
      const first = shared(3 * MiB)
      await s.put('sab/once', first, { ifAbsent: true })
      const err = await s.put('sab/once', shared(3 * MiB), { ifAbsent: true }).catch((e: unknown) => e)
      expect((err as StorageError).code).toBe('AlreadyExists')
      expect(sha(await s.get('sab/once'))).toBe(sha(first))
    } finally {
      await s.close()
    }
  }, 60_000)
})

describe('the S3 upload thread', () => {
  const backend = s3Backend()
  let proxy: FaultProxy
  beforeAll(async () => {
    await (await backend.open()).close() // makes sure the bucket exists
    proxy = await startFaultProxy(backend.endpoint!, { enforceConditionalCreates: true })
  })
  afterAll(async () => proxy.close())

  const open = (o: { requestTimeoutMs?: number; bucket?: string; uploadThread?: boolean } = {}): S3Storage =>
    new S3Storage(o.bucket ?? S3_BUCKET, unique(), {
      clientConfig: s3Config(proxy.url),
      retry: { retries: 6, minTimeoutMs: 5, maxTimeoutMs: 50 },
      conditionalCreate: true,
      ...(o.requestTimeoutMs ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
      ...(o.uploadThread === false ? { uploadThread: false } : {}),
    })

  it('sends shared-memory bodies and nothing else; 5xx, resets and stalls on its requests are retried, with the exact bytes stored', async () => {
    const s = open({ requestTimeoutMs: 1000 })
    try {
      await s.put('plain', randomBytes(2 * MiB)) // ordinary memory: the calling thread
      expect(s.putThread!.sent).toBe(0)
      const body = shared(2 * MiB)
      const isPut = (req: { method?: string; url?: string }): boolean => req.method === 'PUT' && (req.url ?? '').includes('/faulted')
      proxy.inject(['status503', 'reset', 'status500', 'stall'], isPut)
      await s.put('faulted', body)
      expect(proxy.pending).toBe(0)
      // Five requests, all from the thread: the fault-free calling thread never took over.
      expect(s.putThread!.sent).toBe(5)
      expect(sha(await s.get('faulted'))).toBe(sha(body))
    } finally {
      proxy.clearFaults()
      await s.close()
    }
  }, 60_000)

  it('a create-if-absent whose response was lost after the server stored it is our own success on retry, not AlreadyExists', async () => {
    const s = open()
    try {
      const body = shared(2 * MiB)
      proxy.inject('loseResponse', (req) => req.method === 'PUT' && (req.url ?? '').includes('/lost'))
      const info = await s.put('lost', body, { ifAbsent: true })
      expect(info.size).toBe(2 * MiB)
      expect(s.putThread!.sent).toBe(2)
      expect(sha(await s.get('lost'))).toBe(sha(body))
      // Someone else's object is still refused.
      const err = await s.put('lost', shared(MiB), { ifAbsent: true }).catch((e: unknown) => e)
      expect((err as StorageError).code).toBe('AlreadyExists')
    } finally {
      proxy.clearFaults()
      await s.close()
    }
  }, 60_000)

  it('a put abandoned by its deadline returns only once the thread has stopped sending from its body', async () => {
    const s = new S3Storage(S3_BUCKET, unique(), {
      clientConfig: s3Config(proxy.url),
      retry: { retries: 0 },
      requestTimeoutMs: 300,
    })
    try {
      proxy.inject('stall', (req) => req.method === 'PUT' && (req.url ?? '').includes('/abandoned'))
      let inFlightAtReturn = -1
      const err = await s.put('abandoned', shared(2 * MiB)).catch((e: unknown) => {
        inFlightAtReturn = s.putThread!.inFlight
        return e
      })
      expect((err as StorageError).code).toBe('Transient')
      expect(s.putThread!.sent).toBe(1)
      // The commit that owns the body recycles it for other chunks as soon as the put returns.
      expect(inFlightAtReturn).toBe(0)
    } finally {
      proxy.clearFaults()
      await s.close()
    }
  }, 30_000)

  it('a thread that never answers is stopped after the grace period, so nothing waits on it for ever', async () => {
    const mute = `require('node:worker_threads').parentPort.on('message', () => {})`
    const thread = new S3PutThread(s3Config(proxy.url), mute)
    const body = shared(MiB)
    expect(thread.takes(body)).toBe(true)
    const ac = new AbortController()
    const put = thread.put({ Bucket: S3_BUCKET, Key: 'never' }, body, undefined, ac.signal, { backend: 's3', op: 'put', key: 'never' })
    ac.abort()
    await thread.settle([put.catch(() => {})], 50)
    expect(thread.inFlight).toBe(0)
    await expect(put).rejects.toMatchObject({ code: 'Transient' })
    expect(thread.takes(body)).toBe(false)
  })

  it('a failure from the thread is the same typed error as from the calling thread', async () => {
    const bucket = `missing-${randomBytes(4).toString('hex')}`
    const codes: string[] = []
    for (const uploadThread of [true, false]) {
      const s = open({ bucket, uploadThread })
      const err = await s.put('k', shared(2 * MiB)).catch((e: unknown) => e)
      expect(s.putThread?.sent ?? 0).toBe(uploadThread ? 1 : 0)
      expect(err).toBeInstanceOf(StorageError)
      codes.push(`${(err as StorageError).code}: ${(err as Error).message.replace(/pt-[0-9a-f]+/, 'pt-…')}`)
      await s.close()
    }
    expect(codes[0]).toMatch(/^BucketNotFound/)
    expect(codes[0]).toBe(codes[1])
  }, 60_000)

  it('a thread that stops with a request in flight fails only that attempt: the put is retried from the calling thread and stores the exact bytes', async () => {
    // No timer would end the stalled attempt within this test's time: only the thread's end can.
    const s = open({ requestTimeoutMs: 120_000 })
    try {
      const body = shared(2 * MiB)
      proxy.inject('stall', (req) => req.method === 'PUT' && (req.url ?? '').includes('/orphan'))
      const put = s.put('orphan', body)
      while (proxy.pending > 0) await new Promise((r) => setTimeout(r, 10))
      await s.putThread!.close() // as a thread that dies
      await put
      expect(s.putThread!.sent).toBe(1)
      expect(s.putThread!.takes(shared(1))).toBe(false)
      expect(sha(await s.get('orphan'))).toBe(sha(body))
    } finally {
      await s.close()
    }
  }, 30_000)

  it('is not used for a client passed in, nor for a config that a thread cannot receive as it is (a credentials function)', async () => {
    const fn = new S3Storage(S3_BUCKET, unique(), {
      clientConfig: { ...s3Config(proxy.url), credentials: async () => ({ accessKeyId: 'test', secretAccessKey: 'test' }) },
    })
    expect(fn.putThread).toBeUndefined()
    const body = shared(2 * MiB)
    await fn.put('k', body)
    expect(sha(await fn.get('k'))).toBe(sha(body))
    const passed = new S3Storage(S3_BUCKET, unique(), { client: fn.client })
    expect(passed.putThread).toBeUndefined()
    await passed.close()
    await fn.close()
  })

  it('holds the process open while it sends, and not once idle (needs npm run build)', () => {
    const entry = path.resolve('dist/src/storage/s3.js')
    // No close(): the process must still wait for the put, then exit on its own.
    const script = `const { S3Storage } = await import(${JSON.stringify(entry)})
const s = new S3Storage(${JSON.stringify(S3_BUCKET)}, ${JSON.stringify(unique())}, { clientConfig: ${JSON.stringify(s3Config(backend.endpoint!))} })
const body = new Uint8Array(new SharedArrayBuffer(4 << 20)).fill(7)
s.put('k', body).then(async () => {
  const back = await s.get('k')
  console.log('stored', back.length, back[12345], s.putThread.sent)
})`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000, encoding: 'utf8' })
    expect(r.stdout.trim()).toBe(`stored ${4 << 20} 7 1`)
    expect(r.status).toBe(0)
  })
})
