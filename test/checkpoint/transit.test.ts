import { Storage as GcsClient } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { inject } from 'vitest'
import { Checkpointer, latest, type Storage } from '../../src/index.js'
import { collectGarbage } from '../../src/admin.js'
import { GcsStorage } from '../../src/storage/gcs.js'
import { S3Storage } from '../../src/storage/s3.js'
import { GCS_BUCKET, S3_BUCKET, s3Backend, s3Config } from '../helpers/backends.js'
import { match, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js'
import { KiB, quiet, sha } from '../helpers/common.js'

// The checkpoint layer over a network that misbehaves (issue "Trust II"): through a proxy that
// enforces conditional creates the way real S3 and GCS do, loses responses after the server
// acted, cuts and truncates bodies and stalls. A committed checkpoint is never reported as failed,
// garbage collection never mistakes a cut manifest for damage, and every read ends.

const retry = { retries: 6, minTimeoutMs: 5, maxTimeoutMs: 50, deadlineMs: 60_000 }
const unique = (): string => `t-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`

const proxies: FaultProxy[] = []
afterAll(async () => {
  for (const p of proxies) await p.close()
})

async function through(kind: 's3' | 'gcs'): Promise<{ storage: Storage; proxy: FaultProxy }> {
  const endpoint = kind === 's3' ? inject('s3Endpoint') : inject('gcsEndpoint')
  const proxy = await startFaultProxy(endpoint, { enforceConditionalCreates: true })
  proxies.push(proxy)
  if (kind === 's3') {
    await (await s3Backend().open()).close() // makes sure the bucket exists
    return { proxy, storage: new S3Storage(S3_BUCKET, unique(), { clientConfig: s3Config(proxy.url), retry, requestTimeoutMs: 2000, conditionalCreate: true }) }
  }
  const client = new GcsClient({ apiEndpoint: proxy.url, projectId: 'taskpoint-test', retryOptions: { autoRetry: false } })
  return { proxy, storage: new GcsStorage(GCS_BUCKET, unique(), { client, retry, requestTimeoutMs: 2000, conditionalCreate: true }) }
}

const isManifestPut = (req: import('node:http').IncomingMessage): boolean => match.finalUpload(req) && match.pathIncludes('manifests/')(req)
const isMarkerPut = (req: import('node:http').IncomingMessage): boolean => match.finalUpload(req) && match.pathIncludes('writers/')(req)
const isManifestGet = (req: import('node:http').IncomingMessage): boolean => match.download(req) && match.pathIncludes('manifests/')(req)

describe.each(['s3', 'gcs'] as const)('checkpoints over a faulty network on %s', (kind) => {
  it('a lost response on the manifest (and marker) create is not a failed commit', async () => {
    const { storage, proxy } = await through(kind)
    const cp = await Checkpointer.open(storage, { chunkSize: 16 * KiB, ...quiet })
    const data = randomBytes(40 * KiB)
    proxy.inject('loseResponse', isMarkerPut)
    proxy.inject('loseResponse', isManifestPut)
    const info = await cp.write(data, { step: 1 })
    expect(proxy.served.loseResponse).toBe(2)
    expect(proxy.preconditionFailed).toBeGreaterThanOrEqual(2) // the retries met our own objects
    const reader = await Checkpointer.open(storage, quiet)
    expect((await reader.latest())!.id).toBe(info.id)
    expect(sha((await reader.read())!)).toBe(sha(data))
    // And a later commit still works (the marker is ours, the epoch holds).
    proxy.inject('loseResponse', isManifestPut)
    await cp.write(data, { step: 2 })
    expect((await reader.latest())!.step).toBe(2)
  })

  it('garbage collection reading cut or corrupted manifests deletes nothing a checkpoint needs', async () => {
    const { storage, proxy } = await through(kind)
    const cp = await Checkpointer.open(storage, { chunkSize: 16 * KiB, ...quiet })
    const payloads = [randomBytes(32 * KiB), randomBytes(32 * KiB), randomBytes(32 * KiB)]
    const infos = []
    for (const [i, p] of payloads.entries()) infos.push(await cp.write(p, { step: i }))
    proxy.inject(['truncate', 'closeEarly', 'corrupt'], isManifestGet)
    let result: Awaited<ReturnType<typeof collectGarbage>> | undefined
    try {
      result = await collectGarbage(storage, { minAgeMs: 0 })
    } catch {
      // an outage that outlasts the retries aborts the collection: also safe
    }
    if (result) expect(result.blockedBy).toEqual([])
    proxy.clearFaults()
    const reader = await Checkpointer.open(storage, quiet)
    for (const [i, info] of infos.entries()) expect(sha((await reader.read(info.id))!), `checkpoint ${i}`).toBe(sha(payloads[i]!))
  })

  it('reads end with exact bytes through stalls, early closes and corruption of chunks', async () => {
    const { storage, proxy } = await through(kind)
    const cp = await Checkpointer.open(storage, { chunkSize: 16 * KiB, keep: latest(2), gc: { minAgeMs: 0 }, ...quiet })
    const data = randomBytes(64 * KiB)
    await cp.write(data, { step: 1 })
    const isChunkGet = (req: import('node:http').IncomingMessage): boolean => match.download(req) && match.pathIncludes('chunks/')(req)
    proxy.inject(['stall', 'closeEarly', 'truncate', 'corrupt', 'reset', 'status503'], isChunkGet)
    const reader = await Checkpointer.open(storage, quiet)
    expect(sha((await reader.read())!)).toBe(sha(data))
    expect(reader.lastSkipped).toEqual([])
    expect(proxy.pending).toBe(0)
  })
})
