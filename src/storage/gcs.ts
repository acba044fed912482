import { Storage as GcsClient, type StorageOptions as GcsClientOptions, type Bucket } from '@google-cloud/storage'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  AccessDeniedError,
  AlreadyExistsError,
  BucketNotFoundError,
  NotFoundError,
  StorageConfigError,
  StorageError,
  TransientStorageError,
  type StorageErrorDetails,
} from '../errors.js'
import { mapLimit } from '../concurrency.js'
import { joinKey, validateKey, validatePrefix } from './keys.js'
import { collect, intoTarget } from './bytes.js'
import { isTransientNetworkError, operationRunner, type RetryOptions } from './retry.js'
import type { Body, GetOptions, ObjectInfo, PutOptions, Storage } from './types.js'

export interface GcsStorageOptions {
  /** Use this client as is. */
  client?: GcsClient
  /** Extra client options when taskpoint builds the client (projectId, keyFilename, apiEndpoint...). */
  clientOptions?: GcsClientOptions
  /** Objects larger than this use a resumable upload. Default 8 MiB. */
  resumableThreshold?: number
  /** Objects per list page. Default 1000. */
  pageSize?: number
  /** Per-request time limit in ms. Default 60000. */
  requestTimeoutMs?: number
  retry?: RetryOptions
  /** Whether the server enforces `ifGenerationMatch: 0`. Real GCS does. Default true. */
  conditionalCreate?: boolean
}

const MiB = 1024 * 1024

/** Builds a GCS client from options and the usual environment (STORAGE_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS...). */
export function makeGcsClient(options: GcsStorageOptions = {}): GcsClient {
  const emulator = process.env.STORAGE_EMULATOR_HOST
  const o: GcsClientOptions = {
    // taskpoint retries each operation itself; the SDK's own retries would multiply attempts.
    retryOptions: { autoRetry: false },
    timeout: options.requestTimeoutMs ?? 60_000,
    ...options.clientOptions,
  }
  if (emulator && !o.apiEndpoint) o.apiEndpoint = emulator.startsWith('http') ? emulator : `http://${emulator}`
  if (!o.projectId && process.env.GOOGLE_CLOUD_PROJECT) o.projectId = process.env.GOOGLE_CLOUD_PROJECT
  return new GcsClient(o)
}

export class GcsStorage implements Storage {
  readonly backend = 'gcs' as const
  readonly capabilities: { conditionalCreate: boolean }
  readonly uri: string
  readonly client: GcsClient
  private readonly b: Bucket
  private readonly resumableThreshold: number
  private readonly pageSize: number
  private readonly run: ReturnType<typeof operationRunner>

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    options: GcsStorageOptions = {},
  ) {
    if (!/^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$/.test(bucket)) {
      throw new StorageConfigError({ backend: 'gcs', key: bucket }, 'invalid bucket name in URI (expected gs://bucket/prefix, lowercase)')
    }
    this.prefix = prefix.replace(/^\/+|\/+$/g, '')
    if (this.prefix) validateKey(this.prefix, 'gcs', 'open')
    this.uri = `gs://${bucket}${this.prefix ? `/${this.prefix}` : ''}`
    this.client = options.client ?? makeGcsClient(options)
    this.b = this.client.bucket(bucket)
    this.capabilities = { conditionalCreate: options.conditionalCreate ?? true }
    this.run = operationRunner(options.retry, (e, op, key) => mapGcsError(e, { backend: 'gcs', key: `${this.uri}/${key ?? ''}`, op }))
    this.resumableThreshold = options.resumableThreshold ?? 8 * MiB
    this.pageSize = options.pageSize ?? 1000
  }

  private file(key: string, op: string) {
    return this.b.file(joinKey(this.prefix, validateKey(key, 'gcs', op)))
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    const f = this.file(key, 'put')
    const preconditionOpts = options.ifAbsent ? { ifGenerationMatch: 0 } : undefined
    return this.run(
      'put',
      key,
      async () => {
        const size = body instanceof Uint8Array ? body.byteLength : body.size
        if (size !== undefined && size <= this.resumableThreshold) {
          const bytes = body instanceof Uint8Array ? body : await collect(body.open())
          await f.save(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
            resumable: false,
            ...(preconditionOpts ? { preconditionOpts } : {}),
          })
          options.onProgress?.({ key, loaded: bytes.byteLength, total: bytes.byteLength })
        } else {
          // One resumable session streamed in a single request: memory stays bounded by the stream's buffers.
          const ws = f.createWriteStream({ resumable: true, ...(preconditionOpts ? { preconditionOpts } : {}) })
          ws.on('progress', (p: { bytesWritten?: number }) => {
            const ev: { key: string; loaded: number; total?: number } = { key, loaded: p.bytesWritten ?? 0 }
            if (size !== undefined) ev.total = size
            options.onProgress?.(ev)
          })
          const src = body instanceof Uint8Array ? Readable.from([body]) : Readable.from(body.open())
          await pipeline(src, ws, options.signal ? { signal: options.signal } : {})
        }
        const [md] = await f.getMetadata()
        return infoOf(key, md)
      },
      options.signal,
    )
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    const f = this.file(key, 'get')
    return this.run(
      'get',
      key,
      async () => {
        const r = options.range
        if (!r) {
          const [buf] = await f.download({ validation: false })
          return intoTarget(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), options.into)
        }
        const [md] = await f.getMetadata()
        const size = Number(md.size ?? 0)
        const start = Math.min(r.offset, size)
        const end = Math.min(r.length === undefined ? size : r.offset + r.length, size)
        if (end <= start) return new Uint8Array(0)
        const [buf] = await f.download({ start, end: end - 1, validation: false })
        return intoTarget(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), options.into)
      },
      options.signal,
    )
  }

  async getStream(key: string): Promise<Readable> {
    const f = this.file(key, 'get')
    // Fail here, with a typed error, rather than on the first read of the stream.
    await this.run('get', key, () => f.getMetadata())
    return f.createReadStream({ validation: false })
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const f = this.file(key, 'head')
    return this.run('head', key, async () => {
      try {
        const [md] = await f.getMetadata()
        return infoOf(key, md)
      } catch (e) {
        if ((e as { code?: unknown }).code === 404 && !isBucketMissing(e)) return undefined
        throw e
      }
    })
  }

  async *list(prefix = ''): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 'gcs')
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix
    const strip = this.prefix ? this.prefix.length + 1 : 0
    let pageToken: string | undefined
    do {
      const [files, next] = await this.run('list', prefix || undefined, () =>
        this.b.getFiles({ prefix: full, autoPaginate: false, maxResults: this.pageSize, ...(pageToken ? { pageToken } : {}) }),
      )
      for (const f of files) yield infoOf(f.name.slice(strip), f.metadata)
      pageToken = (next as { pageToken?: string } | null)?.pageToken
    } while (pageToken)
  }

  async delete(key: string): Promise<void> {
    const f = this.file(key, 'delete')
    await this.run('delete', key, async () => {
      await f.delete({ ignoreNotFound: true })
    })
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    // The JSON API has no multi-object delete outside batch requests; bounded parallel deletes.
    await mapLimit(keys, 16, (k) => this.delete(k))
  }

  /** S3/GCS puts are durable when they return. */
  async sync(): Promise<void> {}

  async close(): Promise<void> {}
}

function infoOf(key: string, md: { size?: string | number; etag?: string; generation?: string | number; updated?: string }): ObjectInfo {
  const info: ObjectInfo = { key, size: Number(md.size ?? 0) }
  if (md.etag) info.etag = md.etag
  if (md.generation !== undefined) info.generation = String(md.generation)
  if (md.updated) info.lastModified = new Date(md.updated)
  return info
}

function isBucketMissing(e: unknown): boolean {
  return /bucket/i.test(String((e as { message?: string }).message ?? ''))
}

function mapGcsError(e: unknown, d: StorageErrorDetails): unknown {
  if (e instanceof StorageError) return e
  const err = e as { code?: unknown; message?: string; name?: string }
  const status = typeof err.code === 'number' ? err.code : undefined
  const det = { ...d, cause: e }
  if (err.name === 'AbortError') return e
  if (status === 404) return isBucketMissing(e) && !/object|file|No such object/i.test(err.message ?? '') ? new BucketNotFoundError(det) : new NotFoundError(det)
  if (status === 412) return new AlreadyExistsError(det)
  if (status === 401 || status === 403) {
    return new AccessDeniedError(det, `access denied (HTTP ${status}): check GOOGLE_APPLICATION_CREDENTIALS and the bucket's IAM roles`)
  }
  if (/Could not load the default credentials|Unable to detect a Project Id/i.test(err.message ?? '')) {
    return new StorageConfigError(det, `no Google credentials/project: set GOOGLE_APPLICATION_CREDENTIALS (and GOOGLE_CLOUD_PROJECT), or STORAGE_EMULATOR_HOST for an emulator. ${err.message}`)
  }
  if ((status !== undefined && (status >= 500 || status === 429 || status === 408)) || isTransientNetworkError(e)) {
    return new TransientStorageError(det, `transient fault (${status ?? err.code ?? err.name}): ${err.message ?? ''}`.trim())
  }
  return new StorageError('Unknown', `${err.name ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${err.message ?? String(e)}`, det)
}
