import { CreateBucketCommand } from '@aws-sdk/client-s3'
import { Storage as GcsClient } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { inject } from 'vitest'
import { LocalStorage, type RetryOptions, type Storage } from '../../src/index.js'
import { GcsStorage } from '../../src/storage/gcs.js'
import { S3Storage, makeS3Client } from '../../src/storage/s3.js'

export const S3_BUCKET = 'taskpoint-test'
export const GCS_BUCKET = 'taskpoint-test'

export interface OpenOptions {
  retry?: RetryOptions
  pageSize?: number
  /** Send traffic through this URL (a fault-injecting proxy) instead of the server. */
  endpoint?: string
  requestTimeoutMs?: number
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
    open: async (o = {}) => new LocalStorage(path.join(base, unique()), o.retry ? { retry: o.retry } : {}),
    freshUri: async () => ({ uri: path.join(base, unique()), env: {} }),
  }
}

export function s3Backend(): Backend {
  const endpoint = inject('s3Endpoint')
  return {
    name: 's3',
    endpoint,
    lacks: { conditionalCreate: 'fauxqs ignores If-None-Match: * on PutObject (real S3 honours it since 2024)' },
    open: async (o = {}) => {
      await ensureS3Bucket(endpoint)
      return new S3Storage(S3_BUCKET, unique(), {
        clientConfig: s3Config(o.endpoint ?? endpoint),
        retry: o.retry ?? fastRetry,
        ...(o.pageSize ? { pageSize: o.pageSize } : {}),
        ...(o.requestTimeoutMs ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
        conditionalCreate: false,
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
    open: async (o = {}) => {
      const client = new GcsClient({
        apiEndpoint: o.endpoint ?? endpoint,
        projectId: 'taskpoint-test',
        retryOptions: { autoRetry: false },
        timeout: o.requestTimeoutMs ?? 60_000,
      })
      return new GcsStorage(GCS_BUCKET, unique(), {
        client,
        retry: o.retry ?? fastRetry,
        ...(o.pageSize ? { pageSize: o.pageSize } : {}),
        conditionalCreate: false,
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
