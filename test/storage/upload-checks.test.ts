// How uploads are checked without hashing every byte again on the calling thread: S3 puts carry
// the SHA-256 the caller already has (a chunk id) or go up as UNSIGNED-PAYLOAD with the SDK's
// CRC32; GCS uploads are validated with a fast CRC32C. Every backend still round-trips the bytes.
import { S3Client } from '@aws-sdk/client-s3'
import { CRC32C } from '@google-cloud/storage'
import { createHash, randomBytes } from 'node:crypto'
import zlib from 'node:zlib'
import { afterAll, describe, expect, it, vi } from 'vitest'
import { decodeManifest } from '../../src/format/manifest.js'
import { Checkpointer, type Storage } from '../../src/index.js'
import { crc32cOf } from '../../src/storage/gcs-checks.js'
import { checksumBase64 } from '../../src/storage/bytes.js'
import { FastCrc32c, crc32cUpdate } from '../../src/storage/crc32c.js'
import { S3Storage } from '../../src/storage/s3.js'
import { allBackends, s3Backend, s3Config, S3_BUCKET } from '../helpers/backends.js'
import { startFaultProxy } from '../helpers/fault-proxy.js'
import { MiB, sha } from '../helpers/common.js'

const sdkCrc = (...parts: Uint8Array[]): string => {
  const c = new CRC32C()
  for (const p of parts) c.update(Buffer.from(p.buffer, p.byteOffset, p.byteLength))
  return c.toString()
}

describe('fast CRC32C', () => {
  it('matches the SDK on every length, alignment and split', () => {
    const buf = randomBytes(70_000)
    for (const [off, len] of [
      [0, 0],
      [0, 1],
      [1, 7],
      [3, 8],
      [2, 9],
      [5, 4093],
      [0, 65536],
      [7, 69_993],
    ] as const) {
      const view = buf.subarray(off, off + len)
      expect(checksumBase64(crc32cUpdate(0, view))).toBe(sdkCrc(view))
      expect(crc32cOf(view)).toBe(sdkCrc(view))
      const cut = len >> 1
      const f = new FastCrc32c()
      f.update(view.subarray(0, cut))
      f.update(view.subarray(cut))
      expect(f.toString()).toBe(sdkCrc(view))
    }
    expect(crc32cOf(Buffer.from('data'))).toBe('rth90Q==') // the SDK's documented example
  })

  it('validates like the SDK validator', () => {
    const f = new FastCrc32c()
    f.update(Buffer.from('data'))
    const sdk = new CRC32C()
    sdk.update(Buffer.from('data'))
    expect(f.validate('rth90Q==')).toBe(true)
    expect(f.validate('DkjKuA==')).toBe(false)
    expect(f.validate(sdk.toBuffer())).toBe(true)
    expect(f.validate(sdk)).toBe(true)
    expect(f.validate(sdk.valueOf())).toBe(true)
    expect(f.toBuffer().equals(sdk.toBuffer())).toBe(true)
  })
})

describe.each(allBackends().map((b) => [b.name, b] as const))('puts with a known SHA-256: %s', (_name, backend) => {
  let s: Storage
  afterAll(async () => s?.close())

  it('store exactly the bytes, with and without the digest, small and chunk-sized', async () => {
    s = await backend.open()
    for (const size of [0, 1000, 4 * MiB + 3]) {
      const body = randomBytes(size)
      const digest = createHash('sha256').update(body).digest('hex')
      await s.put(`with/${size}`, body, { sha256: digest, batch: true })
      await s.put(`without/${size}`, body, { batch: true })
      await s.sync()
      expect(sha(await s.get(`with/${size}`))).toBe(digest)
      expect(sha(await s.get(`without/${size}`))).toBe(digest)
    }
  }, 60_000)
})

describe('S3 request headers', () => {
  const backend = s3Backend()
  /** The headers of every request the storage sends, as signed. */
  function capture(client: S3Client): Record<string, string>[] {
    const seen: Record<string, string>[] = []
    client.middlewareStack.add(
      (next) => async (args) => {
        seen.push({ ...(args.request as { headers: Record<string, string> }).headers })
        return next(args)
      },
      { step: 'finalizeRequest', priority: 'low' },
    )
    return seen
  }
  const open = async (o: { signPayload?: boolean; client?: S3Client } = {}): Promise<S3Storage> => {
    await (await backend.open()).close() // makes sure the bucket exists
    return new S3Storage(S3_BUCKET, `hdr-${randomBytes(4).toString('hex')}`, { clientConfig: s3Config(backend.endpoint!), ...o })
  }

  it('a put with a known SHA-256 sends it as the payload hash and the checksum, and no CRC32', async () => {
    const s = await open()
    const seen = capture(s.client)
    const body = randomBytes(5000)
    const digest = createHash('sha256').update(body).digest()
    await s.put('k', body, { sha256: digest.toString('hex') })
    const h = seen.at(-1)!
    expect(h['x-amz-content-sha256']).toBe(digest.toString('hex'))
    expect(h['x-amz-checksum-sha256']).toBe(digest.toString('base64'))
    expect(h['x-amz-checksum-crc32']).toBeUndefined()
    await s.close()
  })

  it('a large put without one goes up unsigned with the SDK CRC32, a small one signed; signPayload: true signs all', async () => {
    const body = randomBytes(MiB + 1)
    const unsigned = await open()
    let seen = capture(unsigned.client)
    await unsigned.put('k', body)
    expect(seen.at(-1)!['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD')
    expect(seen.at(-1)!['x-amz-checksum-crc32']).toBeDefined()
    const small = randomBytes(5000)
    await unsigned.put('small', small)
    expect(seen.at(-1)!['x-amz-content-sha256']).toBe(createHash('sha256').update(small).digest('hex'))
    await unsigned.close()

    const signed = await open({ signPayload: true })
    seen = capture(signed.client)
    await signed.put('k', body)
    expect(seen.at(-1)!['x-amz-content-sha256']).toBe(createHash('sha256').update(body).digest('hex'))
    await signed.close()
  })

  it("a client passed in is left as it is; our puts through it are still unsigned, other commands' untouched", async () => {
    const client = new S3Client({ ...s3Config(backend.endpoint!), maxAttempts: 1 })
    const seen = capture(client)
    const s = await open({ client })
    await s.put('k', randomBytes(MiB))
    expect(seen.at(-1)!['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD')
    await s.get('k')
    expect(seen.at(-1)!['x-amz-content-sha256']).not.toBe('UNSIGNED-PAYLOAD')
    expect(client.middlewareStack.identify().some((m) => m.includes('taskpointUnsignedPayload'))).toBe(false)
    await s.close()
    client.destroy()
  })

  it('a CRC32 the caller computed is sent as the checksum and the SDK computes none; without one the SDK sends the same value', async () => {
    const s = await open()
    const seen = capture(s.client)
    const body = randomBytes(MiB + 3)
    await s.put('sdk', body)
    const sdk = seen.at(-1)!['x-amz-checksum-crc32']
    const ours = zlib.crc32(body)
    await s.put('ours', body, { crc32: ours })
    expect(seen.at(-1)!['x-amz-checksum-crc32']).toBe(sdk)
    expect(seen.at(-1)!['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD')
    // A value that is not the body's goes out as given (real S3 then refuses the put: BadDigest),
    // so the SDK did not compute its own; a value that is no CRC32 at all is ignored.
    await s.put('given', body, { crc32: (ours + 1) >>> 0 }).catch(() => {})
    expect(seen.at(-1)!['x-amz-checksum-crc32']).not.toBe(sdk)
    await s.put('bad', body, { crc32: -1 })
    expect(seen.at(-1)!['x-amz-checksum-crc32']).toBe(sdk)
    expect(Buffer.from(await s.get('ours')).equals(body)).toBe(true)
    await s.close()
  })

  it.each([
    ['from the upload thread', true],
    ['from the calling thread', false],
  ] as const)('a commit hands every chunk put the CRC32 its hashing thread computed, which goes out on the wire as the checksum (%s)', async (_how, thread) => {
    await (await backend.open()).close() // makes sure the bucket exists
    const proxy = await startFaultProxy(backend.endpoint!)
    const s = new S3Storage(S3_BUCKET, `hdr-${randomBytes(4).toString('hex')}`, { clientConfig: s3Config(proxy.url), uploadThread: thread })
    try {
      const given = new Map<string, number | undefined>()
      const spy = Object.create(s) as S3Storage
      spy.put = (key, body, o) => {
        if (key.startsWith('chunks/')) given.set(key, o?.crc32)
        return s.put(key, body, o)
      }
      const state = randomBytes(3 * 8 * MiB + MiB) // every chunk large enough to hash off the calling thread
      const cp = await Checkpointer.open(spy, { repro: false, onWarning: () => {} })
      const info = await cp.write(state)
      const m = decodeManifest(info.id, await s.get(info.id))
      expect(m.files[0]!.chunks.length).toBe(4)
      // Chunks (in shared memory) go from the thread, and only they: locks and manifests do not.
      expect(s.sentFromThread).toBe(thread ? 4 : 0)
      let off = 0
      for (const c of m.files[0]!.chunks) {
        const key = [...given.keys()].find((k) => k.endsWith(c.hash))!
        const crc = zlib.crc32(state.subarray(off, off + c.size))
        expect(given.get(key), c.hash).toBe(crc)
        const puts = proxy.requests.filter((r) => r.method === 'PUT' && decodeURIComponent(r.path).includes(c.hash))
        expect(puts.length, c.hash).toBe(1)
        expect(puts[0]!.headers['x-amz-checksum-crc32']).toBe(checksumBase64(crc))
        expect(puts[0]!.headers['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD')
        off += c.size
      }
      expect(Buffer.from((await cp.read())!).equals(state)).toBe(true)
      await cp.close()
    } finally {
      await s.close()
      await proxy.close()
    }
  })

  it('a wrong digest is never silently stored under the right one', async () => {
    // The test server does not verify checksums (real S3 refuses the put with BadDigest): what the
    // driver guarantees is that it sends the digest it was given, unaltered, for the server to check.
    const s = await open()
    const seen = capture(s.client)
    const wrong = '0'.repeat(64)
    await s.put('k', randomBytes(100), { sha256: wrong }).catch(() => {})
    expect(seen.at(-1)!['x-amz-checksum-sha256']).toBe(Buffer.from(wrong, 'hex').toString('base64'))
    await s.close()
  })
})

describe('GCS upload validation', () => {
  it('uses the fast CRC32C and still checks every upload', async () => {
    const backend = allBackends().find((b) => b.name === 'gcs')!
    const s = await backend.open()
    const spy = vi.spyOn(FastCrc32c.prototype, 'update')
    const body = randomBytes(3 * MiB)
    await s.put('v', body)
    expect(spy).toHaveBeenCalled()
    expect(sha(await s.get('v'))).toBe(sha(body))
    spy.mockRestore()
    await s.close()
  })
})
