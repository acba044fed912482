import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { randomBytes } from 'node:crypto'
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
import { collect, readBody, stallGuard } from './bytes.js'
import { joinKey, validateKey, validatePrefix } from './keys.js'
import { isTransientNetworkError, operationRunner, type Attempt, type RetryOptions, type Runner } from './retry.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, SweepOptions, SweepResult } from './types.js'

/** User metadata naming the put() call that wrote an object, to recognise our own object after a lost response. */
export const PUT_TOKEN_META = 'tp-put'

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
  /**
   * A request that moves no bytes for this long (no response, or a body that stopped) is abandoned
   * as a transient fault and retried. Default 60000.
   */
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
  return new S3Client(config)
}

export class S3Storage implements Storage {
  readonly backend = 's3' as const
  readonly capabilities: { conditionalCreate: boolean }
  readonly uri: string
  readonly client: S3Client
  private readonly ownsClient: boolean
  private readonly o: Required<Pick<S3StorageOptions, 'multipartThreshold' | 'partSize' | 'queueSize' | 'pageSize'>>
  private readonly run: Runner
  private readonly stallMs: number

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
    const where = (key: string | undefined): string => `${this.uri}/${key ?? ''}`
    this.stallMs = options.requestTimeoutMs ?? 60_000
    this.run = operationRunner({
      backend: 's3',
      retry: options.retry,
      stallMs: this.stallMs,
      where,
      mapError: (e, op, key) => mapS3Error(e, { backend: 's3', key: where(key), op }),
    })
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
    // Names this call's object. If a create-if-absent's response is lost and the retry meets 412,
    // the token tells our own object (a success) from someone else's (AlreadyExists).
    const token = randomBytes(12).toString('hex')
    const Metadata = { [PUT_TOKEN_META]: token }
    const size = body instanceof Uint8Array ? body.byteLength : body.size
    return this.run(
      'put',
      key,
      async (a) => {
        try {
          return await this.putOnce(key, Key, body, size, { ...cond, Metadata }, options, a)
        } catch (e) {
          if (options.ifAbsent && isPreconditionFailed(e)) {
            const own = await this.ownObject(key, Key, token, size, a)
            if (own) return own
          }
          throw e
        }
      },
      options.signal,
    )
  }

  /** The object at Key if a put carrying `token` wrote it (and it has the expected size). */
  private async ownObject(key: string, Key: string, token: string, size: number | undefined, a: Attempt): Promise<ObjectInfo | undefined> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: a.signal })
      if (h.Metadata?.[PUT_TOKEN_META] !== token || (size !== undefined && h.ContentLength !== size)) return undefined
      const info: ObjectInfo = { key, size: h.ContentLength ?? 0 }
      if (h.ETag) info.etag = h.ETag
      if (h.LastModified) info.lastModified = h.LastModified
      return info
    } catch (e) {
      if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined
      throw e
    }
  }

  private async putOnce(
    key: string,
    Key: string,
    body: Body,
    size: number | undefined,
    extra: { IfNoneMatch?: string; Metadata: Record<string, string> },
    options: PutOptions,
    a: Attempt,
  ): Promise<ObjectInfo> {
    if (size !== undefined && size <= this.o.multipartThreshold) {
      const bytes = body instanceof Uint8Array ? body : await collect(body.open())
      const out = await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key, Body: bytes, ContentLength: bytes.byteLength, ...extra }),
        { abortSignal: a.signal },
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
      params: { Bucket: this.bucket, Key, Body: src, ...extra },
      partSize: this.o.partSize,
      queueSize: this.o.queueSize,
      leavePartsOnError: false,
    })
    upload.on('httpUploadProgress', (p) => {
      a.progress()
      const ev: { key: string; loaded: number; total?: number } = { key, loaded: p.loaded ?? 0 }
      const total = p.total ?? size
      if (total !== undefined) ev.total = total
      options.onProgress?.(ev)
    })
    const onAbort = (): void => void upload.abort().catch(() => {})
    a.signal.addEventListener('abort', onAbort, { once: true })
    try {
      const out = await upload.done()
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: a.signal })
      const info: ObjectInfo = { key, size: head.ContentLength ?? 0 }
      const etag = out.ETag ?? head.ETag
      if (etag) info.etag = etag
      return info
    } finally {
      a.signal.removeEventListener('abort', onAbort)
    }
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
    const details = { backend: 's3' as const, key: `${this.uri}/${key}`, op: 'get' }
    return this.run(
      'get',
      key,
      async (a) => {
        let out
        try {
          out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: this.rangeHeader(options.range) }), {
            abortSignal: a.signal,
          })
        } catch (e) {
          // A range wholly past the end: return nothing, like a file read at EOF.
          if ((e as { name?: string }).name === 'InvalidRange') return new Uint8Array(0)
          throw e
        }
        if (!out.Body) return new Uint8Array(0)
        const stream = out.Body as Readable
        a.signal.addEventListener('abort', () => stream.destroy(), { once: true })
        // The SDK checks the object's CRC32/CRC32C as the body ends (a mismatch throws: transient).
        const bytes = await readBody(stream, { into: options.into, progress: a.progress, details, announced: out.ContentLength })
        checkLength(bytes.byteLength, out.ContentLength, out.ContentRange, details)
        return bytes
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
      // Not the attempt's signal: the stream outlives the attempt, and the caller owns it from here.
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: options.signal })
      const b = out.Body
      if (!b) return Readable.from([])
      const src = b instanceof Readable ? b : Readable.fromWeb(b.transformToWebStream() as never)
      // Errors reach the caller typed (a cut or damaged body is Transient), and a body that stops
      // arriving ends the stream instead of leaving the caller waiting.
      const details = { backend: 's3' as const, key: `${this.uri}/${key}`, op: 'get' }
      let n = 0
      const guarded = stallGuard({
        stallMs: this.stallMs,
        error: () => new TransientStorageError(details, `stream stalled: no data for ${this.stallMs} ms`),
        onStall: () => src.destroy(),
        onChunk: (c) => void (n += c.byteLength),
        atEnd: () =>
          out.ContentLength !== undefined && n !== out.ContentLength
            ? new TransientStorageError(details, `stream ended after ${n} of ${out.ContentLength} bytes: cut short in transit`)
            : undefined,
      })
      src.on('error', (e) => guarded.destroy(mapS3Error(e, details) as Error))
      guarded.once('close', () => src.destroy())
      return src.pipe(guarded)
    })
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.full(key, 'head')
    return this.run('head', key, async (a) => {
      try {
        const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: a.signal })
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

  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 's3')
    const after = options.startAfter === undefined ? undefined : this.prefix ? `${this.prefix}/${options.startAfter}` : options.startAfter
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix
    const strip = this.prefix ? this.prefix.length + 1 : 0
    let token: string | undefined
    do {
      const page = await this.run('list', prefix || undefined, (a) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: token, MaxKeys: this.o.pageSize, ...(after !== undefined && !token ? { StartAfter: after } : {}) }), {
          abortSignal: a.signal,
        }),
      )
      for (const o of page.Contents ?? []) {
        // A server that ignores StartAfter costs time, never correctness.
        if (!o.Key || (after !== undefined && o.Key <= after)) continue
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
    await this.run('delete', key, async (a) => {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: a.signal })
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
      await this.run('deleteMany', batch[0]!.slice(this.prefix ? this.prefix.length + 1 : 0), async (a) => {
        const out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
          { abortSignal: a.signal },
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

  /**
   * Aborts incomplete multipart uploads under the prefix started more than `olderThanMs` ago:
   * their parts are invisible but stored (and billed) until aborted. Part sizes are not listed,
   * so `bytes` is 0. A bucket lifecycle rule (AbortIncompleteMultipartUpload) does the same.
   */
  async sweep(options: SweepOptions = {}): Promise<SweepResult> {
    const olderThanMs = options.olderThanMs ?? 60 * 60_000
    const result: SweepResult = { removed: 0, bytes: 0, items: [] }
    const full = this.prefix ? `${this.prefix}/` : ''
    const strip = full.length
    let KeyMarker: string | undefined
    let UploadIdMarker: string | undefined
    do {
      const page = await this.run('sweep', undefined, (a) =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: full, KeyMarker, UploadIdMarker }), { abortSignal: a.signal }),
      )
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Key.startsWith(full)) continue
        if (u.Initiated && Date.now() - u.Initiated.getTime() < olderThanMs) continue
        const key = u.Key.slice(strip)
        await this.run('sweep', key, async (a) => {
          try {
            await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: a.signal })
          } catch (e) {
            // Finished or aborted meanwhile: nothing left to sweep.
            if ((e as { name?: string }).name !== 'NoSuchUpload' && (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw e
          }
        })
        result.removed++
        result.items.push(`${key}#${u.UploadId}`)
      }
      const more = page.IsTruncated === true
      KeyMarker = more ? page.NextKeyMarker : undefined
      UploadIdMarker = more ? page.NextUploadIdMarker : undefined
    } while (KeyMarker)
    return result
  }

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
  if (isPreconditionFailed(e)) return new AlreadyExistsError(det)
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
  // Damage in transit, not in storage: the object's stored checksum did not match the bytes that
  // arrived, or a 2xx response could not be parsed (a truncated or garbled XML listing).
  if (/checksum mismatch/i.test(err.message ?? '')) return new TransientStorageError(det, `body damaged in transit (${err.message}); retried`)
  if ((status === undefined || (status >= 200 && status < 300)) && /Deserialization error|XML parse error|Unexpected end|Unexpected token|not valid JSON/i.test(err.message ?? '')) {
    return new TransientStorageError(det, `unreadable response (truncated or garbled in transit): ${(err.message ?? '').split('\n')[0]}`)
  }
  return new StorageError('Unknown', `${name || 'error'}${status ? ` (HTTP ${status})` : ''}: ${err.message ?? String(e)}`, det)
}

function isPreconditionFailed(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } }
  return err?.name === 'PreconditionFailed' || err?.$metadata?.httpStatusCode === 412
}

/**
 * The body must be as long as the response said, and a ranged body as long as its Content-Range:
 * a short body that still looks complete at the HTTP level is a transient fault, never data.
 */
function checkLength(got: number, contentLength: number | undefined, contentRange: string | undefined, d: StorageErrorDetails): void {
  let want = contentLength
  const m = contentRange ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange) : null
  if (m) want = Number(m[2]) - Number(m[1]) + 1
  if (want !== undefined && got !== want) throw new TransientStorageError(d, `body of ${got} bytes, the response announced ${want}: cut short in transit; retried`)
}
