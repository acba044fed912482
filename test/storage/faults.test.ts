import { createHash, randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { StorageError, openStorage, type Storage } from '../../src/index.js'
import { parseStorageUri } from '../../src/storage/index.js'
import { S3Storage } from '../../src/storage/s3.js'
import { gcsBackend, s3Backend, type Backend } from '../helpers/backends.js'
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js'

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

// Transient faults are injected by a real HTTP proxy between the real SDK and the real test server.
describe.each([s3Backend, gcsBackend].map((f) => f()).map((b) => [b.name, b] as const))('transient faults: %s', (_n, backend: Backend) => {
  let proxy: FaultProxy
  let s: Storage
  const retries: string[] = []
  beforeAll(async () => {
    proxy = await startFaultProxy(backend.endpoint!)
    s = await backend.open({
      endpoint: proxy.url,
      requestTimeoutMs: 1500,
      retry: { retries: 6, minTimeoutMs: 5, maxTimeoutMs: 50, onRetry: (i) => retries.push(`${i.op}:${i.error.name}`) },
    })
  })
  afterAll(async () => {
    await s.close()
    await proxy.close()
  })

  it('put and get survive injected 500s, 503s and connection resets with the object intact', async () => {
    const data = randomBytes(256 * 1024)
    retries.length = 0
    proxy.inject(['status500', 'reset', 'status503'])
    await s.put('f/obj', data)
    proxy.inject(['reset', 'status500'])
    const back = await s.get('f/obj')
    expect(sha(back)).toBe(sha(data))
    expect(proxy.served.status500).toBeGreaterThanOrEqual(2)
    expect(proxy.served.reset).toBeGreaterThanOrEqual(2)
    expect(retries.length).toBeGreaterThanOrEqual(5)
  })

  it('a stalled request times out and is retried', async () => {
    const data = randomBytes(1000)
    const before = proxy.served.stall
    proxy.inject(['stall'], (req) => req.method === 'GET')
    await s.put('f/stall', data)
    expect(sha(await s.get('f/stall'))).toBe(sha(data))
    expect(proxy.served.stall).toBe(before + 1)
  }, 30_000)

  it('listing resumes after a fault on a later page', async () => {
    const paged = await backend.open({ endpoint: proxy.url, pageSize: 5, retry: { retries: 4, minTimeoutMs: 5, maxTimeoutMs: 20 } })
    for (let i = 0; i < 12; i++) await paged.put(`l/${String(i).padStart(2, '0')}`, Buffer.from(String(i)))
    let n = 0
    const keys: string[] = []
    for await (const o of paged.list('l/')) {
      keys.push(o.key)
      if (++n === 5) proxy.inject(['status500'])
    }
    expect(keys).toHaveLength(12)
    await paged.close()
  })

  it('gives up after the retry budget with a Transient error naming backend and key', async () => {
    const tight = await backend.open({ endpoint: proxy.url, retry: { retries: 2, minTimeoutMs: 5, maxTimeoutMs: 10 } })
    proxy.inject(['status500', 'status500', 'status500'])
    const err = await tight.get('f/obj').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageError)
    expect((err as StorageError).code).toBe('Transient')
    expect((err as StorageError).message).toContain(backend.name)
    expect((err as StorageError).message).toContain('f/obj')
    await tight.close()
  })
})

describe('permanent errors fail at once', () => {
  it('a missing S3 bucket is BucketNotFound with no retries', async () => {
    const endpoint = s3Backend().endpoint!
    const retried: unknown[] = []
    const s = new S3Storage('no-such-bucket-here', 'x', {
      clientConfig: { endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } },
      retry: { retries: 5, minTimeoutMs: 5, onRetry: (i) => retried.push(i) },
    })
    const err = (await s.get('k').catch((e: unknown) => e)) as StorageError
    expect(err.code).toBe('BucketNotFound')
    expect(err.message).toMatch(/bucket/)
    expect(retried).toHaveLength(0)
    await s.close()
  })

  it('an unreachable endpoint ends in a Transient error after the bounded budget', async () => {
    const s = await openStorage('s3://bucket/p', {
      s3: {
        clientConfig: { endpoint: 'http://127.0.0.1:9', region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } },
        retry: { retries: 2, minTimeoutMs: 5, maxTimeoutMs: 10 },
      },
    })
    const err = (await s.head('k').catch((e: unknown) => e)) as StorageError
    expect(err.code).toBe('Transient')
    expect(err.message).toContain('s3://bucket/p/k')
    await s.close()
  })
})

describe('URIs', () => {
  it('parse to the right backend', () => {
    expect(parseStorageUri('/tmp/x')).toEqual({ backend: 'local', bucket: '/tmp/x', prefix: '' })
    expect(parseStorageUri('file:///tmp/x')).toEqual({ backend: 'local', bucket: '/tmp/x', prefix: '' })
    expect(parseStorageUri('s3://b/runs/42/')).toEqual({ backend: 's3', bucket: 'b', prefix: 'runs/42' })
    expect(parseStorageUri('gs://b')).toEqual({ backend: 'gcs', bucket: 'b', prefix: '' })
  })
  it('refuse unknown schemes, empty buckets and prefixes that escape', async () => {
    expect(() => parseStorageUri('ftp://x/y')).toThrow(/unsupported URI scheme/)
    expect(() => parseStorageUri('s3:///x')).toThrow(/no bucket/)
    await expect(openStorage('s3://bucket/../etc')).rejects.toThrow(/segment/)
    await expect(openStorage('gs://Bad_Bucket/x')).rejects.toThrow(/invalid bucket/)
  })
})
