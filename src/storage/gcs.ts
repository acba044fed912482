import type { Storage as GcsClient, Bucket, File } from '@google-cloud/storage'
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import pLimit from 'p-limit'
import { TransientStorageError, type StorageErrorDetails } from '../errors.js'
import { readBody } from './bytes.js'
import { defineDriver } from './driver.js'
import { CRC32C_DEFAULT_VALIDATOR_GENERATOR } from '@google-cloud/storage'
import { fastCrc32cGenerator } from './crc32c.js'
import { checkMetadata, crc32cOf, hashFromHeader, infoOf } from './gcs-checks.js'
import { makeGcsClient, type GcsStorageOptions } from './gcs-client.js'
import { gcsStatus, isGcsNotFound, mapGcsError } from './gcs-errors.js'
import { ObjectRoot } from './object-root.js'
import { optionChecks } from './option-checks.js'
import { operationRunner, type Attempt, type Runner } from './retry.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, StorageCapabilities, SweepResult } from './types.js'

export { makeGcsClient, type GcsStorageOptions } from './gcs-client.js'

/** Custom metadata naming the put() call that wrote an object, to recognise our own object after a lost response. */
export const PUT_TOKEN_META = 'tpPut'

const MiB = 1024 * 1024

/** Objects in a Google Cloud Storage bucket under a prefix: the driver behind `gs://bucket/prefix`. */
export class GcsStorage implements Storage {
  readonly backend = 'gcs' as const
  readonly capabilities: StorageCapabilities
  readonly uri: string
  readonly prefix: string
  readonly client: GcsClient
  private readonly root: ObjectRoot
  private readonly gcsBucket: Bucket
  private readonly resumableThreshold: number
  private readonly pageSize: number
  private readonly run: Runner

  constructor(
    readonly bucket: string,
    prefix: string,
    options: GcsStorageOptions = {},
  ) {
    this.root = new ObjectRoot('gcs', 'gs', bucket, prefix, { pattern: /^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$/, hint: ', lowercase' })
    this.prefix = this.root.prefix
    this.uri = this.root.uri
    this.client = options.client ?? makeGcsClient(options)
    // The SDK validates every upload with a CRC32C computed byte by byte on this thread (~100
    // MiB/s); the same check with a faster CRC32C (see crc32c.ts), unless the caller set their own.
    this.gcsBucket = this.client.bucket(bucket, this.client.crc32cGenerator === CRC32C_DEFAULT_VALIDATOR_GENERATOR ? { crc32cGenerator: fastCrc32cGenerator } : {})
    // Many parallel requests hide per-request latency on an object store.
    // Chunks of 8 MiB: one request each, at the resumable threshold (so a single simple upload).
    this.capabilities = { conditionalCreate: options.conditionalCreate ?? true, preferredConcurrency: 16, preferredChunkSize: 8 * MiB }
    const where = (key: string | undefined): string => this.root.where(key)
    this.run = operationRunner({
      backend: 'gcs',
      retry: options.retry,
      stallMs: options.requestTimeoutMs ?? 60_000,
      where,
      mapError: (e, op, key) => mapGcsError(e, { backend: 'gcs', key: where(key), op }),
    })
    const check = optionChecks('gcs')
    // Infinity: never resumable.
    this.resumableThreshold =
      options.resumableThreshold === Number.POSITIVE_INFINITY
        ? options.resumableThreshold
        : check.whole('resumableThreshold', options.resumableThreshold, 8 * MiB, 0, Number.MAX_SAFE_INTEGER, ' of bytes')
    // GCS returns at most 1000 objects a listing page.
    this.pageSize = check.whole('pageSize', options.pageSize, 1000, 1, 1000)
  }

  private file(key: string, op: string, generation?: string | number): File {
    // A fresh File per attempt: the SDK keeps upload state and metadata on the object.
    return this.gcsBucket.file(this.root.full(key, op), generation !== undefined ? { generation: Number(generation) } : {})
  }

  private details(key: string, op: string): StorageErrorDetails {
    return { backend: 'gcs', key: this.root.where(key), op }
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
      if (isGcsNotFound(e)) return undefined
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
    const got = crc32cOf(bytes)
    if (got !== want) {
      throw new TransientStorageError(details, `crc32c ${got} of ${bytes.byteLength} bytes received, the object's is ${want}: cut short or damaged in transit; retried`)
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    this.file(key, 'head')
    return this.run('head', key, async () => {
      try {
        const [md] = await this.file(key, 'head').getMetadata()
        checkMetadata(md, this.details(key, 'head'))
        return infoOf(key, md)
      } catch (e) {
        if (isGcsNotFound(e)) return undefined
        throw e
      }
    })
  }

  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const full = this.root.listPrefix(prefix)
    const after = options.startAfter === undefined ? undefined : this.root.listPrefix('') + options.startAfter
    let pageToken: string | undefined
    do {
      const [files, next] = await this.run('list', prefix || undefined, async () => {
        const res = await this.gcsBucket.getFiles({
          prefix: full,
          autoPaginate: false,
          maxResults: this.pageSize,
          ...(pageToken ? { pageToken } : {}),
          ...(after !== undefined ? { startOffset: after } : {}),
        })
        // A JSON body cut short arrives as a string when the content type is not exactly what the
        // HTTP layer parses, and the SDK then reports an empty page: refuse it rather than list nothing.
        const body = (res as unknown[])[2]
        if (typeof body !== 'object' || body === null || ('items' in body && !Array.isArray((body as { items?: unknown }).items))) {
          throw new TransientStorageError(this.details(prefix, 'list'), 'unreadable listing page (truncated or garbled in transit); retried')
        }
        return res
      })
      // startOffset is inclusive (and an emulator may ignore it): the bound is applied here too.
      for (const f of files) if (after === undefined || f.name > after) yield infoOf(this.root.keyOf(f.name), f.metadata)
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
    await pLimit(16).map(keys, (k) => this.delete(k))
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

/** `gs://bucket/prefix`. Registered in registry.ts. */
export const driver = defineDriver<GcsStorageOptions>({
  name: 'gcs',
  open: (location, options) => new GcsStorage(location.bucket, location.prefix, options),
})
