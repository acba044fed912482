import { CreateBucketCommand } from '@aws-sdk/client-s3'
import { Storage as GcsClient } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { inject } from 'vitest'
import type { Storage } from '../../src/index.js'
import { LocalStorage, type RetryOptions } from '../../src/storage/index.js'
import { GcsStorage } from '../../src/storage/gcs.js'
import { S3Storage, makeS3Client } from '../../src/storage/s3.js'
import { startFaultProxy, type FaultProxy } from './fault-proxy.js'

export const S3_BUCKET = 'taskpoint-test'
export const GCS_BUCKET = 'taskpoint-test'

export interface OpenOptions {
  retry?: RetryOptions
  pageSize?: number
  /** Send traffic through this URL (a fault-injecting proxy) instead of the server. */
  endpoint?: string
  requestTimeoutMs?: number
  /**
   * s3/gcs: go through a proxy (one per server and test file) that enforces conditional creates
   * the way real S3/GCS do, which the test servers do not; the storage then claims the capability.
   * Ignored when `endpoint` is given (put your own proxy in enforcing mode instead).
   */
  enforceConditionalCreates?: boolean
}

export interface Backend {
  name: 'local' | 's3' | 'gcs'
  /** Features this *test server* lacks, with the reason; the real service has them. */
  lacks: { conditionalCreate?: string }
  /** A fresh, empty root on this backend. */
  open(options?: OpenOptions): Promise<Storage>
  /** A fresh URI plus the environment a child process needs to reach it. */
  freshUri(): Promise<{ uri: string; env: Record<string, string> }>
  /** The server's base URL (s3/gcs). */
  endpoint?: string
}

const enforcing = new Map<string, Promise<FaultProxy>>()
/** The shared conditional-create-enforcing proxy in front of `endpoint`. */
export function enforcingProxy(endpoint: string): Promise<FaultProxy> {
  let p = enforcing.get(endpoint)
  if (!p) enforcing.set(endpoint, (p = startFaultProxy(endpoint, { enforceConditionalCreates: true })))
  return p
}
/** Closes the shared enforcing proxies (afterAll of a file that used them). */
export async function closeEnforcingProxies(): Promise<void> {
  const all = [...enforcing.values()]
  enforcing.clear()
  for (const p of all) await (await p).close()
}
async function routeOf(options: OpenOptions, endpoint: string): Promise<{ url: string; enforced: boolean }> {
  if (options.endpoint) return { url: options.endpoint, enforced: false }
  if (options.enforceConditionalCreates) return { url: (await enforcingProxy(endpoint)).url, enforced: true }
  return { url: endpoint, enforced: false }
}

const fastRetry: RetryOptions = { retries: 4, minTimeoutMs: 10, maxTimeoutMs: 100 }
const unique = (): string => `t-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`

let bucketReady: Promise<unknown> | undefined
async function ensureS3Bucket(endpoint: string): Promise<void> {
  bucketReady ??= makeS3Client({ clientConfig: s3Config(endpoint) })
    .send(new CreateBucketCommand({ Bucket: S3_BUCKET }))
    .catch((e: { name?: string }) => {
      if (e.name !== 'BucketAlreadyOwnedByYou' && e.name !== 'BucketAlreadyExists') throw e
    })
  await bucketReady
}

export function s3Config(endpoint: string) {
  return { endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }
}

export function localBackend(): Backend {
  const base = mkdtempSync(path.join(tmpdir(), 'taskpoint-local-'))
  return {
    name: 'local',
    lacks: {},
    open: async (options = {}) => new LocalStorage(path.join(base, unique()), options.retry ? { retry: options.retry } : {}),
    freshUri: async () => ({ uri: path.join(base, unique()), env: {} }),
  }
}

export function s3Backend(): Backend {
  const endpoint = inject('s3Endpoint')
  return {
    name: 's3',
    endpoint,
    lacks: { conditionalCreate: 'fauxqs ignores If-None-Match: * on PutObject (real S3 honours it since 2024)' },
    open: async (options = {}) => {
      await ensureS3Bucket(endpoint)
      const route = await routeOf(options, endpoint)
      return new S3Storage(S3_BUCKET, unique(), {
        clientConfig: s3Config(route.url),
        retry: options.retry ?? fastRetry,
        ...(options.pageSize ? { pageSize: options.pageSize } : {}),
        ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
        conditionalCreate: route.enforced,
      })
    },
    freshUri: async () => {
      await ensureS3Bucket(endpoint)
      return {
        uri: `s3://${S3_BUCKET}/${unique()}`,
        env: { AWS_ENDPOINT_URL: endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' },
      }
    },
  }
}

export function gcsBackend(): Backend {
  const endpoint = inject('gcsEndpoint')
  return {
    name: 'gcs',
    endpoint,
    lacks: { conditionalCreate: 'the firebase-tools Cloud Storage emulator ignores ifGenerationMatch: 0 (real GCS honours it)' },
    open: async (options = {}) => {
      const route = await routeOf(options, endpoint)
      const client = new GcsClient({
        apiEndpoint: route.url,
        projectId: 'taskpoint-test',
        retryOptions: { autoRetry: false },
        timeout: options.requestTimeoutMs ?? 60_000,
      })
      return new GcsStorage(GCS_BUCKET, unique(), {
        client,
        retry: options.retry ?? fastRetry,
        ...(options.pageSize ? { pageSize: options.pageSize } : {}),
        ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
        conditionalCreate: route.enforced,
      })
    },
    freshUri: async () => ({
      uri: `gs://${GCS_BUCKET}/${unique()}`,
      env: { STORAGE_EMULATOR_HOST: endpoint, GOOGLE_CLOUD_PROJECT: 'taskpoint-test' },
    }),
  }
}

export function allBackends(): Backend[] {
  return [localBackend(), s3Backend(), gcsBackend()]
}
