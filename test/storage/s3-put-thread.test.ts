// The S3 upload thread (src/storage/s3-put-thread.ts): bodies in shared memory go from a worker
// thread with its own client. Everything here runs against the real S3 test server, through the
// fault proxy where a fault is needed, and checks that the thread keeps every guarantee of the
// calling thread's path: exact bytes, retries, create-if-absent, error codes, no hang, no early exit.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import zlib from 'node:zlib'
import { S3ServiceException } from '@aws-sdk/client-s3'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Checkpointer, StorageError } from '../../src/index.js'
import { S3Storage } from '../../src/storage/s3.js'
import { S3PutThread } from '../../src/storage/s3-put-thread.js'
import { allBackends, s3Backend, s3Config, S3_BUCKET } from '../helpers/backends.js'
import { MiB, queuedThreadStarts } from '../helpers/common.js'
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
      expect(s.sentFromThread).toBe(0)
      const body = shared(2 * MiB)
      const isPut = (req: { method?: string; url?: string }): boolean => req.method === 'PUT' && (req.url ?? '').includes('/faulted')
      proxy.inject(['status503', 'reset', 'status500', 'stall'], isPut)
      await s.put('faulted', body)
      expect(proxy.pending).toBe(0)
      // Five requests, all from the thread: the fault-free calling thread never took over.
      expect(s.sentFromThread).toBe(5)
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
      expect(s.sentFromThread).toBe(2)
      expect(sha(await s.get('lost'))).toBe(sha(body))
      // Someone else's object is still refused.
      const err = await s.put('lost', shared(MiB), { ifAbsent: true }).catch((e: unknown) => e)
      expect((err as StorageError).code).toBe('AlreadyExists')
    } finally {
      proxy.clearFaults()
      await s.close()
    }
  }, 60_000)

  it('a put abandoned by its deadline stops its request in the thread, and returns only once the thread has stopped sending from its body', async () => {
    // The SDK's own timeout is far off: only the abort message can end the stalled request soon.
    const s = new S3Storage(S3_BUCKET, unique(), {
      clientConfig: s3Config(proxy.url),
      retry: { retries: 0, deadlineMs: 400 },
      requestTimeoutMs: 60_000,
    })
    try {
      proxy.inject('stall', (req) => req.method === 'PUT' && (req.url ?? '').includes('/abandoned'))
      let inFlightAtReturn = -1
      const err = await s.put('abandoned', shared(2 * MiB)).catch((e: unknown) => {
        inFlightAtReturn = s.putThread!.inFlight
        return e
      })
      expect((err as StorageError).code).toBe('Transient')
      expect(s.sentFromThread).toBe(1)
      // The commit that owns the body recycles it for other chunks as soon as the put returns.
      expect(inFlightAtReturn).toBe(0)
      // Ended by the abort, not by the 10 s grace that stops a thread which does not answer.
      expect(s.putThread!.stopped).toBe(false)
    } finally {
      proxy.clearFaults()
      await s.close()
    }
  }, 30_000)

  it('a put whose caller aborted before it started sends nothing and stores nothing, as from the calling thread', async () => {
    for (const uploadThread of [true, false]) {
      const s = open({ uploadThread })
      try {
        const body = shared(2 * MiB)
        const ac = new AbortController()
        const put = s.put('aborted', body, { signal: ac.signal })
        ac.abort()
        await expect(put).rejects.toMatchObject({ name: 'AbortError' })
        body.fill(0xee) // the caller is free to reuse its buffer
        await new Promise((r) => setTimeout(r, 200))
        expect(await s.head('aborted'), `uploadThread: ${uploadThread}`).toBeUndefined()
      } finally {
        await s.close()
      }
    }
  })

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
      expect(s.sentFromThread).toBe(uploadThread ? 1 : 0)
      expect(err).toBeInstanceOf(StorageError)
      codes.push(`${(err as StorageError).code}: ${(err as Error).message.replace(/pt-[0-9a-f]+/, 'pt-…')}`)
      await s.close()
    }
    expect(codes[0]).toMatch(/^BucketNotFound/)
    expect(codes[0]).toBe(codes[1])
  }, 60_000)

  it.each(['status500', 'status503', 'reset', 'stall'] as const)(
    '%s as the last attempt: the same error (code, message, cause) from both paths',
    async (fault) => {
      const seen: Record<string, unknown>[] = []
      for (const uploadThread of [true, false]) {
        const prefix = unique()
        const s = new S3Storage(S3_BUCKET, prefix, {
          clientConfig: { ...s3Config(proxy.url), requestHandler: { connectionTimeout: 10_000, requestTimeout: 300, throwOnRequestTimeout: true } },
          requestTimeoutMs: 10_000,
          retry: { retries: 0 },
          uploadThread,
        })
        proxy.inject(fault, (req) => req.method === 'PUT' && (req.url ?? '').includes(prefix))
        try {
          const e = (await s.put('k', shared(2 * MiB)).catch((x: unknown) => x)) as StorageError
          const c = (e.cause ?? {}) as Record<string, unknown> & { $metadata?: { httpStatusCode?: number } }
          expect(s.sentFromThread).toBe(uploadThread ? 1 : 0)
          seen.push({
            code: e.code,
            message: e.message.replaceAll(prefix, 'P'),
            causeName: c.name,
            causeCode: c.code,
            causeStatus: c.$metadata?.httpStatusCode,
            causeFault: c.$fault,
            causeRetryable: c.$retryable,
            causeIsService: c instanceof S3ServiceException,
          })
        } finally {
          proxy.clearFaults()
          await s.close()
        }
      }
      expect(seen[0]).toEqual(seen[1])
    },
    30_000,
  )

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
      expect(s.sentFromThread).toBe(1)
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

  const VOLATILE = new Set(['authorization', 'x-amz-date', 'user-agent', 'x-amz-user-agent', 'amz-sdk-invocation-id', 'amz-sdk-request', 'host', 'connection', 'x-amz-meta-tp-put'])
  it.each([
    ['512 KiB', 512 * 1024, {}],
    ['exactly 1 MiB', MiB, {}],
    ['2 MiB at an offset in its buffer (a snapshot chunk)', 2 * MiB, { offset: 3 * MiB + 17 }],
    ['2 MiB with a CRC32', 2 * MiB, { crc32: true }],
    ['2 MiB with a SHA-256', 2 * MiB, { sha256: true }],
    ['2 MiB create-if-absent', 2 * MiB, { ifAbsent: true }],
    ['2 MiB, signPayload', 2 * MiB, { signPayload: true }],
    ['8 MiB with a CRC32, at an offset', 8 * MiB, { crc32: true, offset: 4096 }],
  ] as const)(
    '%s: the same request on the wire from both paths, and the exact bytes stored',
    async (_name, size, o: { offset?: number; crc32?: boolean; sha256?: boolean; ifAbsent?: boolean; signPayload?: boolean }) => {
      const seen: Record<string, unknown>[] = []
      const off = o.offset ?? 0
      const whole = shared(size + off + 100) // other bytes around the body, as in a snapshot
      const body = whole.subarray(off, off + size)
      for (const uploadThread of [true, false]) {
        const prefix = unique()
        const s = new S3Storage(S3_BUCKET, prefix, { clientConfig: s3Config(proxy.url), uploadThread, ...(o.signPayload ? { signPayload: true } : {}) })
        try {
          await s.put('k', body, {
            ...(o.crc32 ? { crc32: zlib.crc32(body) } : {}),
            ...(o.sha256 ? { sha256: sha(body) } : {}),
            ...(o.ifAbsent ? { ifAbsent: true } : {}),
          })
          expect(s.sentFromThread).toBe(uploadThread ? 1 : 0)
          expect(sha(await s.get('k'))).toBe(sha(body))
          const puts = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes(prefix))
          expect(puts.length).toBe(1)
          seen.push({ path: puts[0]!.path.replace(prefix, 'P'), ...Object.fromEntries(Object.entries(puts[0]!.headers).filter(([k]) => !VOLATILE.has(k))) })
        } finally {
          await s.close()
        }
      }
      expect(seen[0]).toEqual(seen[1])
    },
    30_000,
  )

  it('once the user adds middleware to storage.client or replaces its send, uploads go through that client again', async () => {
    const s = open()
    try {
      await s.put('before', shared(2 * MiB))
      expect(s.sentFromThread).toBe(1)
      s.client.middlewareStack.add(
        (next) => (args) => {
          const r = args.request as { headers?: Record<string, string> }
          if (r.headers) r.headers['x-amz-server-side-encryption'] = 'AES256'
          return next(args)
        },
        { step: 'build', name: 'userSse' },
      )
      await s.put('after', shared(2 * MiB))
      expect(s.sentFromThread).toBe(1)
      const put = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/after'))
      expect(put.at(-1)!.headers['x-amz-server-side-encryption']).toBe('AES256')
    } finally {
      await s.close()
    }
    const t = open()
    try {
      let sends = 0
      const send = t.client.send.bind(t.client)
      t.client.send = ((...args: Parameters<typeof send>) => (sends++, send(...args))) as typeof t.client.send
      await t.put('k', shared(2 * MiB))
      expect(sends).toBe(1)
      expect(t.sentFromThread).toBe(0)
    } finally {
      await t.close()
    }
  })

  it("a writer's claim starts the thread ahead of its first upload; not for a client the user customized", async () => {
    // A config of its own: a thread of its own, not one an earlier test started.
    const own = (): S3Storage => new S3Storage(S3_BUCKET, unique(), { clientConfig: { ...s3Config(proxy.url), maxAttempts: 2 } })
    const s = own()
    const cp = await Checkpointer.open(s, { repro: false, onWarning: () => {} })
    try {
      expect(s.putThread!.started).toBe(false)
      await cp.claim()
      await queuedThreadStarts()
      expect(s.putThread!.started).toBe(true)
      expect(s.sentFromThread).toBe(0) // the claim's own small objects went from the calling thread
      await cp.write(randomBytes(3 * MiB))
      expect(s.sentFromThread).toBeGreaterThan(0)
    } finally {
      await cp.close()
      await s.close()
    }
    const t = own()
    const send = t.client.send.bind(t.client)
    t.client.send = ((...args: Parameters<typeof send>) => send(...args)) as typeof t.client.send
    const ct = await Checkpointer.open(t, { repro: false, onWarning: () => {} })
    try {
      await ct.claim()
      await queuedThreadStarts()
      expect(t.putThread!.started).toBe(false)
    } finally {
      await ct.close()
      await t.close()
    }
  })

  it('storages built from the same config share one thread, which the last one to close stops', async () => {
    const threads = (): number => readdirSync('/proc/self/task').length
    const a = open()
    await a.put('k', shared(MiB))
    const t0 = threads()
    const more = Array.from({ length: 6 }, () => open())
    for (const s of more) await s.put('k', shared(MiB))
    expect(more.every((s) => s.putThread === a.putThread && s.sentFromThread === 1)).toBe(true)
    expect(threads()).toBe(t0)
    for (const s of more) await s.close()
    expect(a.putThread!.stopped).toBe(false)
    await a.close()
    expect(a.putThread!.stopped).toBe(true)
  })

  it('holds the process open while it sends, and not once idle (needs npm run build)', () => {
    const entry = path.resolve('dist/src/storage/s3.js')
    // No close(): the process must still wait for the put, then exit on its own.
    const script = `const { S3Storage } = await import(${JSON.stringify(entry)})
const s = new S3Storage(${JSON.stringify(S3_BUCKET)}, ${JSON.stringify(unique())}, { clientConfig: ${JSON.stringify(s3Config(backend.endpoint!))} })
const body = new Uint8Array(new SharedArrayBuffer(4 << 20)).fill(7)
s.put('k', body).then(async () => {
  const back = await s.get('k')
  console.log('stored', back.length, back[12345], s.sentFromThread)
})`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000, encoding: 'utf8' })
    expect(r.stdout.trim()).toBe(`stored ${4 << 20} 7 1`)
    expect(r.status).toBe(0)
  })
})
