import { CRC32C, Storage as GcsClient, type StorageOptions as GcsClientOptions, type Bucket, type File } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
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
import { readBody, stallGuard } from './bytes.js'
import { isTransientNetworkError, operationRunner, type Attempt, type RetryOptions, type Runner } from './retry.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, SweepResult } from './types.js'

/** Custom metadata naming the put() call that wrote an object, to recognise our own object after a lost response. */
export const PUT_TOKEN_META = 'tpPut'

export interface GcsStorageOptions {
  /** Use this client as is. */
  client?: GcsClient
  /** Extra client options when taskpoint builds the client (projectId, keyFilename, apiEndpoint...). */
  clientOptions?: GcsClientOptions
  /** Objects larger than this use a resumable upload. Default 8 MiB. */
  resumableThreshold?: number
  /** Objects per list page. Default 1000. */
  pageSize?: number
  /**
   * A request that moves no bytes for this long (no response, or a body that stopped) is abandoned
   * as a transient fault and retried. Default 60000.
   */
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
  private readonly run: Runner
  private readonly stallMs: number

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
    const where = (key: string | undefined): string => `${this.uri}/${key ?? ''}`
    this.stallMs = options.requestTimeoutMs ?? 60_000
    this.run = operationRunner({
      backend: 'gcs',
      retry: options.retry,
      stallMs: this.stallMs,
      where,
      mapError: (e, op, key) => mapGcsError(e, { backend: 'gcs', key: where(key), op }),
    })
    this.resumableThreshold = options.resumableThreshold ?? 8 * MiB
    this.pageSize = options.pageSize ?? 1000
  }

  private file(key: string, op: string, generation?: string | number): File {
    // A fresh File per attempt: the SDK keeps upload state and metadata on the object.
    return this.b.file(joinKey(this.prefix, validateKey(key, 'gcs', op)), generation !== undefined ? { generation: Number(generation) } : {})
  }

  private details(key: string, op: string): StorageErrorDetails {
    return { backend: 'gcs', key: `${this.uri}/${key}`, op }
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    this.file(key, 'put')
    // Names this call's object. If a create-if-absent's response is lost and the retry meets 412,
    // the token tells our own object (a success) from someone else's (AlreadyExists).
    const token = randomBytes(12).toString('hex')
    const size = body instanceof Uint8Array ? body.byteLength : body.size
    return this.run(
      'put',
      key,
      async (a) => {
        const f = this.file(key, 'put')
        try {
          return await this.putOnce(f, key, body, size, token, options, a)
        } catch (e) {
          if (options.ifAbsent && gcsStatus(e) === 412) {
            const own = await this.ownObject(key, token, size)
            if (own) return own
          }
          throw e
        }
      },
      options.signal,
    )
  }

  /** The object at key if a put carrying `token` wrote it (and it has the expected size). */
  private async ownObject(key: string, token: string, size: number | undefined): Promise<ObjectInfo | undefined> {
    try {
      const [md] = await this.file(key, 'put').getMetadata()
      checkMetadata(md, this.details(key, 'put'))
      if ((md.metadata as Record<string, unknown> | undefined)?.[PUT_TOKEN_META] !== token || (size !== undefined && Number(md.size) !== size)) return undefined
      return infoOf(key, md)
    } catch (e) {
      if (gcsStatus(e) === 404) return undefined
      throw e
    }
  }

  private async putOnce(f: File, key: string, body: Body, size: number | undefined, token: string, options: PutOptions, a: Attempt): Promise<ObjectInfo> {
    // Up to the threshold one multipart request; beyond it (or of unknown size) one resumable session
    // streamed in a single request, so memory stays bounded by the stream's buffers.
    const resumable = size === undefined || size > this.resumableThreshold
    const ws = f.createWriteStream({
      resumable,
      metadata: { metadata: { [PUT_TOKEN_META]: token } },
      ...(options.ifAbsent ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
    })
    ws.on('progress', (p: { bytesWritten?: number }) => {
      a.progress()
      const ev: { key: string; loaded: number; total?: number } = { key, loaded: p.bytesWritten ?? 0 }
      if (size !== undefined) ev.total = size
      options.onProgress?.(ev)
    })
    const src = body instanceof Uint8Array ? Readable.from([Buffer.from(body.buffer, body.byteOffset, body.byteLength)]) : Readable.from(body.open())
    await pipeline(src, ws, { signal: a.signal })
    if (!resumable) options.onProgress?.({ key, loaded: size ?? 0, total: size ?? 0 })
    // The upload's response carries the object's metadata; ask only if it did not arrive.
    let md = f.metadata
    if (!md || typeof md !== 'object' || md.size === undefined) [md] = await f.getMetadata()
    checkMetadata(md, this.details(key, 'put'))
    return infoOf(key, md)
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    this.file(key, 'get')
    const details = this.details(key, 'get')
    return this.run(
      'get',
      key,
      async (a) => {
        const r = options.range
        if (!r) return this.download(key, details, a, options.into)
        // Ranges: clamp to the object's size first, then read exactly that generation.
        const [md] = await this.file(key, 'get').getMetadata()
        checkMetadata(md, details)
        const size = Number(md.size)
        const start = Math.min(r.offset, size)
        const end = Math.min(r.length === undefined ? size : r.offset + r.length, size)
        if (end <= start) return new Uint8Array(0)
        const bytes = await this.download(key, details, a, options.into, { start, end: end - 1, generation: md.generation })
        // A range has no checksum of its own: its length is what can be checked.
        if (bytes.byteLength !== end - start) {
          throw new TransientStorageError(details, `range body of ${bytes.byteLength} bytes, expected ${end - start}: cut short in transit; retried`)
        }
        return bytes
      },
      options.signal,
    )
  }

  /**
   * One download through the SDK's read stream, validated here: the SDK's own check is off because
   * it is skipped whenever the server omits x-goog-stored-content-encoding (the emulator does), and
   * a body that ends early must be caught. Whole objects are checked against the crc32c of the
   * x-goog-hash header (or the object's metadata); a mismatch is a transient fault, retried.
   *
   * Why a download could hang before: the SDK reads through node-fetch 2, which pipes the HTTP
   * response into a PassThrough and only reports a premature close for chunked responses; a body
   * with a Content-Length that stops early neither ends nor errors. The attempt's stall timer (and
   * destroying the stream when it fires) is what ends it now.
   */
  private async download(
    key: string,
    details: StorageErrorDetails,
    a: Attempt,
    into: Uint8Array | undefined,
    range?: { start: number; end: number; generation: string | number | undefined },
  ): Promise<Uint8Array> {
    const f = this.file(key, 'get', range?.generation)
    let headers: Record<string, string | string[] | undefined> | undefined
    const stream = f.createReadStream({ validation: false, ...(range ? { start: range.start, end: range.end } : {}) })
    stream.on('response', (res: { headers?: Record<string, string> }) => {
      headers = res.headers
      a.progress()
    })
    const onAbort = (): void => void stream.destroy()
    a.signal.addEventListener('abort', onAbort, { once: true })
    try {
      const bytes = await readBody(stream, { into, progress: a.progress, details })
      if (!range) await this.checkWhole(key, bytes, headers, details)
      return bytes
    } finally {
      a.signal.removeEventListener('abort', onAbort)
    }
  }

  private async checkWhole(key: string, bytes: Uint8Array, headers: Record<string, string | string[] | undefined> | undefined, details: StorageErrorDetails): Promise<void> {
    if (headers?.['content-encoding'] === 'gzip') return // decompressed by the SDK: the stored hash is of the gzip bytes
    let want = hashFromHeader(headers?.['x-goog-hash'], 'crc32c')
    let wantSize: number | undefined
    if (want === undefined) {
      const gen = headers?.['x-goog-generation']
      const [md] = await this.file(key, 'get', typeof gen === 'string' ? gen : undefined).getMetadata()
      checkMetadata(md, details)
      want = typeof md.crc32c === 'string' ? md.crc32c : undefined
      wantSize = Number(md.size)
    }
    if (wantSize !== undefined && bytes.byteLength !== wantSize) {
      throw new TransientStorageError(details, `body of ${bytes.byteLength} bytes, the object has ${wantSize}: cut short in transit; retried`)
    }
    if (want === undefined) return
    const crc = new CRC32C()
    crc.update(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    if (crc.toString() !== want) {
      throw new TransientStorageError(details, `crc32c ${crc.toString()} of ${bytes.byteLength} bytes received, the object's is ${want}: cut short or damaged in transit; retried`)
    }
  }

  async getStream(key: string, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    this.file(key, 'get')
    const details = this.details(key, 'get')
    // Fail here, with a typed error, rather than on the first read of the stream; and pin the
    // generation so the checksum below is the one of the bytes we read.
    const md = await this.run(
      'get',
      key,
      async () => {
        const [m] = await this.file(key, 'get').getMetadata()
        checkMetadata(m, details)
        return m
      },
      options.signal,
    )
    const src = this.file(key, 'get', md.generation).createReadStream({ validation: false, decompress: false })
    const crc = new CRC32C()
    let n = 0
    const out = stallGuard({
      stallMs: this.stallMs,
      error: () => new TransientStorageError(details, `stream stalled: no data for ${this.stallMs} ms`),
      onStall: () => src.destroy(),
      onChunk: (c) => {
        crc.update(c)
        n += c.byteLength
      },
      atEnd: () => {
        if (n !== Number(md.size)) return new TransientStorageError(details, `stream ended after ${n} of ${md.size} bytes: cut short in transit`)
        if (typeof md.crc32c === 'string' && crc.toString() !== md.crc32c) return new TransientStorageError(details, 'crc32c mismatch: damaged in transit')
        return undefined
      },
    })
    src.on('error', (e) => out.destroy(mapGcsError(e, details) as Error))
    out.once('close', () => src.destroy())
    options.signal?.addEventListener('abort', () => out.destroy(options.signal!.reason as Error), { once: true })
    return src.pipe(out)
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    this.file(key, 'head')
    return this.run('head', key, async () => {
      try {
        const [md] = await this.file(key, 'head').getMetadata()
        checkMetadata(md, this.details(key, 'head'))
        return infoOf(key, md)
      } catch (e) {
        if (gcsStatus(e) === 404 && !isBucketMissing(e)) return undefined
        throw e
      }
    })
  }

  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix, 'gcs')
    const after = options.startAfter === undefined ? undefined : this.prefix ? `${this.prefix}/${options.startAfter}` : options.startAfter
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix
    const strip = this.prefix ? this.prefix.length + 1 : 0
    let pageToken: string | undefined
    do {
      const [files, next] = await this.run('list', prefix || undefined, async () => {
        const res = await this.b.getFiles({ prefix: full, autoPaginate: false, maxResults: this.pageSize, ...(pageToken ? { pageToken } : {}), ...(after !== undefined ? { startOffset: after } : {}) })
        // A JSON body cut short arrives as a string when the content type is not exactly what the
        // HTTP layer parses, and the SDK then reports an empty page: refuse it rather than list nothing.
        const body = (res as unknown[])[2]
        if (typeof body !== 'object' || body === null || ('items' in body && !Array.isArray((body as { items?: unknown }).items))) {
          throw new TransientStorageError({ backend: 'gcs', key: `${this.uri}/${prefix}`, op: 'list' }, 'unreadable listing page (truncated or garbled in transit); retried')
        }
        return res
      })
      // startOffset is inclusive (and an emulator may ignore it): the bound is applied here too.
      for (const f of files) if (after === undefined || f.name > after) yield infoOf(f.name.slice(strip), f.metadata)
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

  /**
   * Nothing to sweep on GCS: a simple upload is atomic, and a resumable session that a killed
   * writer never finalised is invisible, holds no object and expires on its own after a week.
   */
  async sweep(): Promise<SweepResult> {
    return { removed: 0, bytes: 0, items: [] }
  }

  async close(): Promise<void> {}
}

function infoOf(key: string, md: { size?: string | number; etag?: string; generation?: string | number; updated?: string }): ObjectInfo {
  const info: ObjectInfo = { key, size: Number(md.size ?? 0) }
  if (md.etag) info.etag = md.etag
  if (md.generation !== undefined) info.generation = String(md.generation)
  if (md.updated) info.lastModified = new Date(md.updated)
  return info
}

/** Metadata that arrived cut short is a string (or lacks the object's name): transient, never an object of size 0. */
function checkMetadata(md: unknown, d: StorageErrorDetails): asserts md is { name: string; size?: string | number; generation?: string | number; crc32c?: string; metadata?: unknown } {
  if (typeof md !== 'object' || md === null || typeof (md as { name?: unknown }).name !== 'string') {
    throw new TransientStorageError(d, 'unreadable object metadata (truncated or garbled in transit); retried')
  }
}

function hashFromHeader(h: string | string[] | undefined, kind: 'crc32c' | 'md5'): string | undefined {
  for (const part of (Array.isArray(h) ? h.join(',') : (h ?? '')).split(',')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === kind) return part.slice(i + 1).trim()
  }
  return undefined
}

/**
 * The HTTP status of a GCS SDK error: ApiError carries it as a numeric `code`, but errors of the
 * resumable-upload path come from gaxios with `status` / `response.status` (a 412 there used to
 * map to Unknown).
 */
function gcsStatus(e: unknown): number | undefined {
  const err = e as { code?: unknown; status?: unknown; response?: { status?: unknown } } | undefined
  for (const v of [err?.code, err?.status, err?.response?.status]) if (typeof v === 'number' && v >= 100 && v < 600) return v
  return undefined
}

function isBucketMissing(e: unknown): boolean {
  return /bucket/i.test(String((e as { message?: string }).message ?? ''))
}

function mapGcsError(e: unknown, d: StorageErrorDetails): unknown {
  if (e instanceof StorageError) return e
  const err = e as { code?: unknown; message?: string; name?: string }
  const status = gcsStatus(e)
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
  // A 2xx JSON body that could not be parsed was cut short or garbled in transit.
  if (err.name === 'FetchError' || /invalid json|Unexpected end of JSON|Unexpected token|not valid JSON/i.test(err.message ?? '')) {
    return new TransientStorageError(det, `unreadable response (truncated or garbled in transit): ${err.message ?? ''}`)
  }
  return new StorageError('Unknown', `${err.name ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${err.message ?? String(e)}`, det)
}
