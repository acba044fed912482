import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { Readable } from 'node:stream'
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
import { collect, intoTarget } from './bytes.js'
import { joinKey, validateKey, validatePrefix } from './keys.js'
import { isTransientNetworkError, operationRunner, type RetryOptions } from './retry.js'
import type { Body, GetOptions, ObjectInfo, PutOptions, Storage } from './types.js'

export interface S3StorageOptions {
  /** Use this client as is (its own retry settings are kept; ours still wrap each operation). */
  client?: S3Client
  /** Extra client config when taskpoint builds the client (region, endpoint, credentials...). */
  clientConfig?: S3ClientConfig
  /** Objects larger than this go up as multipart uploads. Default 8 MiB. */
  multipartThreshold?: number
  /** Multipart part size. Default 8 MiB (S3 minimum is 5 MiB). */
  partSize?: number
  /** Parts in flight per multipart upload. Default 4. */
  queueSize?: number
  /** Keys per ListObjectsV2 page. Default 1000 (the S3 maximum). */
  pageSize?: number
  /** Per-request time limit in ms; a stalled request becomes a transient fault. Default 60000. */
  requestTimeoutMs?: number
  retry?: RetryOptions
  /**
   * Whether the server enforces `If-None-Match: *`. Real S3 (since 2024), MinIO and R2 do; set
   * false for servers that silently ignore it. Default true.
   */
  conditionalCreate?: boolean
}

const MiB = 1024 * 1024

/** Builds an S3 client from options and the SDK's usual environment (AWS_REGION, AWS_ENDPOINT_URL, ...). */
export function makeS3Client(options: S3StorageOptions = {}): S3Client {
  const env = process.env
  const endpoint = options.clientConfig?.endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL
  const pathStyleEnv = env.AWS_S3_FORCE_PATH_STYLE ?? env.TASKPOINT_S3_FORCE_PATH_STYLE
  const config: S3ClientConfig = {
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    // Self-hosted S3 (MinIO, test servers) rarely has wildcard DNS: path style unless told otherwise.
    forcePathStyle: pathStyleEnv !== undefined ? pathStyleEnv === 'true' || pathStyleEnv === '1' : endpoint !== undefined,
    // taskpoint retries each operation itself; a second retry layer inside the SDK would multiply attempts.
    maxAttempts: 1,
    requestHandler: {
      connectionTimeout: 10_000,
      requestTimeout: options.requestTimeoutMs ?? 60_000,
      throwOnRequestTimeout: true,
    },
    ...options.clientConfig,
  }
  if (endpoint !== undefined) config.endpoint = endpoint
  // The SDK's 8-line "Node 20 support ends in 2027" warning on every run is noise to our users: set
  // the SDK's own switch for the client we build (it warns at most once per process), then undo it
  // so child processes and the user's own clients see their environment unchanged.
  const quiet = env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  try {
    return new S3Client(config)
  } finally {
    if (quiet === undefined) delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
  }
}

export class S3Storage implements Storage {
  readonly backend = 's3' as const
  readonly capabilities: { conditionalCreate: boolean }
  readonly uri: string
  readonly client: S3Client
  private readonly ownsClient: boolean
  private readonly o: Required<Pick<S3StorageOptions, 'multipartThreshold' | 'partSize' | 'queueSize' | 'pageSize'>>
  private readonly run: ReturnType<typeof operationRunner>

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    options: S3StorageOptions = {},
  ) {
    if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket)) {
      throw new StorageConfigError({ backend: 's3', key: bucket }, 'invalid bucket name in URI (expected s3://bucket/prefix)')
    }
    this.prefix = prefix.replace(/^\/+|\/+$/g, '')
    if (this.prefix) validateKey(this.prefix, 's3', 'open')
    this.uri = `s3://${bucket}${this.prefix ? `/${this.prefix}` : ''}`
    this.client = options.client ?? makeS3Client(options)
    this.ownsClient = !options.client
    this.capabilities = { conditionalCreate: options.conditionalCreate ?? true }
    this.run = operationRunner(options.retry, (e, op, key) => mapS3Error(e, { backend: 's3', key: `${this.uri}/${key ?? ''}`, op }))
    this.o = {
      multipartThreshold: options.multipartThreshold ?? 8 * MiB,
      partSize: options.partSize ?? 8 * MiB,
      queueSize: options.queueSize ?? 4,
      pageSize: options.pageSize ?? 1000,
    }
  }

  private full(key: string, op: string): string {
    return joinKey(this.prefix, validateKey(key, 's3', op))
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    const Key = this.full(key, 'put')
    const cond = options.ifAbsent ? { IfNoneMatch: '*' } : {}
    return this.run(
      'put',
      key,
      async () => {
        const size = body instanceof Uint8Array ? body.byteLength : body.size
        if (size !== undefined && size <= this.o.multipartThreshold) {
          const bytes = body instanceof Uint8Array ? body : await collect(body.open())
          const out = await this.client.send(
            new PutObjectCommand({ Bucket: this.bucket, Key, Body: bytes, ContentLength: bytes.byteLength, ...cond }),
            { abortSignal: options.signal },
          )
          options.onProgress?.({ key, loaded: bytes.byteLength, total: bytes.byteLength })
          const info: ObjectInfo = { key, size: bytes.byteLength }
          if (out.ETag) info.etag = out.ETag
          return info
        }
        // Large or unknown size: bounded-memory multipart (queueSize parts of partSize in flight).
        const src = body instanceof Uint8Array ? body : Readable.from(body.open())
        const upload = new Upload({
          client: this.client,
          params: { Bucket: this.bucket, Key, Body: src, ...cond },
          partSize: this.o.partSize,
          queueSize: this.o.queueSize,
          leavePartsOnError: false,
        })
        upload.on('httpUploadProgress', (p) => {
          const ev: { key: string; loaded: number; total?: number } = { key, loaded: p.loaded ?? 0 }
          const total = p.total ?? size
          if (total !== undefined) ev.total = total
          options.onProgress?.(ev)
        })
        const onAbort = (): void => void upload.abort().catch(() => {})
        options.signal?.addEventListener('abort', onAbort, { once: true })
        try {
          const out = await upload.done()
          const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }))
          const info: ObjectInfo = { key, size: head.ContentLength ?? 0 }
          const etag = out.ETag ?? head.ETag
          if (etag) info.etag = etag
          return info
        } finally {
          options.signal?.removeEventListener('abort', onAbort)
        }
      },
      options.signal,
    )
  }

  private rangeHeader(range: GetOptions['range']): string | undefined {
    if (!range) return undefined
    if (range.length === 0) return undefined
    return range.length === undefined ? `bytes=${range.offset}-` : `bytes=${range.offset}-${range.offset + range.length - 1}`
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    const Key = this.full(key, 'get')
    if (options.range?.length === 0) {
      await this.headOrThrow(key)
      return new Uint8Array(0)
    }
    return this.run(
      'get',
      key,
      async () => {
        try {
          const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: this.rangeHeader(options.range) }), {
            abortSignal: options.signal,
          })
          if (!out.Body) return new Uint8Array(0)
          return intoTarget(await out.Body.transformToByteArray(), options.into)
        } catch (e) {
          // A range wholly past the end: return nothing, like a file read at EOF.
          if ((e as { name?: string }).name === 'InvalidRange') return new Uint8Array(0)
          throw e
        }
      },
      options.signal,
    )
  }

  private async headOrThrow(key: string): Promise<ObjectInfo> {
    const info = await this.head(key)
    if (!info) throw new NotFoundError({ backend: 's3', key: `${this.uri}/${key}`, op: 'get' })
    return info
  }

  async getStream(key: string, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    const Key = this.full(key, 'get')
    return this.run('get', key, async () => {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: options.signal })
      const b = out.Body
      if (!b) return Readable.from([])
      return b instanceof Readable ? b : Readable.fromWeb(b.transformToWebStream() as never)
    })
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.full(key, 'head')
    return this.run('head', key, async () => {
      try {
        const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }))
        const info: ObjectInfo = { key, size: out.ContentLength ?? 0 }
        if (out.ETag) info.etag = out.ETag
        if (out.LastModified) info.lastModified = out.LastModified
        return info
      } catch (e) {
        const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
        const name = (e as { name?: string }).name
        if ((status === 404 || name === 'NotFound' || name === 'NoSuchKey') && name !== 'NoSuchBucket') return undefined
        throw e
      }
    })
  }

  async *list(prefix = ''): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 's3')
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix
    const strip = this.prefix ? this.prefix.length + 1 : 0
    let token: string | undefined
    do {
      const page = await this.run('list', prefix || undefined, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: token, MaxKeys: this.o.pageSize })),
      )
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue
        const info: ObjectInfo = { key: o.Key.slice(strip), size: o.Size ?? 0 }
        if (o.ETag) info.etag = o.ETag
        if (o.LastModified) info.lastModified = o.LastModified
        yield info
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
  }

  async delete(key: string): Promise<void> {
    const Key = this.full(key, 'delete')
    await this.run('delete', key, async () => {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }))
      } catch (e) {
        if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404 && (e as { name?: string }).name !== 'NoSuchBucket') return
        throw e
      }
    })
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const full = keys.map((k) => this.full(k, 'delete'))
    for (let i = 0; i < full.length; i += 1000) {
      const batch = full.slice(i, i + 1000)
      await this.run('deleteMany', undefined, async () => {
        const out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        )
        const errs = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey')
        if (errs.length > 0) {
          const first = errs[0]!
          const err = Object.assign(new Error(`${errs.length} of ${batch.length} deletes failed, first ${first.Key}: ${first.Code} ${first.Message ?? ''}`), {
            name: first.Code ?? 'DeleteFailed',
            $metadata: { httpStatusCode: first.Code === 'AccessDenied' ? 403 : first.Code === 'SlowDown' || first.Code === 'InternalError' ? 503 : 400 },
          })
          throw err
        }
      })
    }
  }

  /** S3/GCS puts are durable when they return. */
  async sync(): Promise<void> {}

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy()
  }
}

function mapS3Error(e: unknown, d: StorageErrorDetails): unknown {
  if (e instanceof StorageError) return e
  const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; code?: string }
  const status = err.$metadata?.httpStatusCode
  const name = err.name ?? ''
  const det = { ...d, cause: e }
  if (name === 'AbortError') return e
  if (name === 'NoSuchBucket') return new BucketNotFoundError(det)
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new NotFoundError(det)
  if (name === 'PreconditionFailed' || status === 412) return new AlreadyExistsError(det)
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'AccessDenied', 'AllAccessDisabled'].includes(name) || status === 403 || status === 401) {
    return new AccessDeniedError(det, `access denied (${name || status}): check AWS credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE), the region, and the bucket policy`)
  }
  if (name === 'CredentialsProviderError') {
    return new StorageConfigError(det, 'no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or pass clientConfig.credentials')
  }
  if (
    (status !== undefined && (status >= 500 || status === 429 || status === 408 || status === 409)) ||
    ['SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError', 'ServiceUnavailable', 'TimeoutError', 'ConditionalRequestConflict'].includes(name) ||
    err.$retryable !== undefined ||
    isTransientNetworkError(e)
  ) {
    return new TransientStorageError(det, `transient fault (${name || err.code || status}): ${err.message ?? ''}`.trim())
  }
  return new StorageError('Unknown', `${name || 'error'}${status ? ` (HTTP ${status})` : ''}: ${err.message ?? String(e)}`, det)
}
