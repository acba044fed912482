import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { NotFoundError, type StorageErrorDetails } from '../errors.js'
import { checksumBase64, readBody } from './bytes.js'
import { defineDriver } from './driver.js'
import { ObjectRoot } from './object-root.js'
import { optionChecks } from './option-checks.js'
import { operationRunner, type Attempt, type Runner } from './retry.js'
import { newS3Client, s3ClientConfig, type S3StorageOptions } from './s3-client.js'
import { isPlainData, type S3PutThread, sharedPutThread } from './s3-put-thread.js'
import { checkLength, isPreconditionFailed, isS3NotFound, mapS3Error, s3Status } from './s3-errors.js'
import type { Body, GetOptions, ListOptions, ObjectInfo, PutOptions, Storage, StorageCapabilities, SweepOptions, SweepResult } from './types.js'

export { makeS3Client, type S3StorageOptions } from './s3-client.js'

/** User metadata naming the put() call that wrote an object, to recognise our own object after a lost response. */
export const PUT_TOKEN_META = 'tp-put'

const MiB = 1024 * 1024

/**
 * Adds a middleware that marks the payload of a large PutObject or UploadPart request as unsigned,
 * so the SigV4 signer does not SHA-256 the whole body on the calling thread (it does for every
 * in-memory body otherwise, over HTTP and HTTPS alike: ~0.4 s of main-thread CPU per 256 MiB here,
 * more than the upload itself costs the client). The body still carries the SDK's CRC32 checksum
 * header (x-amz-checksum-crc32, computed natively and signed as a header), which S3 verifies
 * before storing: a body damaged in transit is refused either way. What a signed payload adds is
 * protection against an active attacker rewriting the body on an unencrypted connection: bodies
 * under 1 MiB (manifests, markers) keep it, since it costs them next to nothing; chunks keep it
 * too when their SHA-256 is known (PutOptions.sha256); `signPayload: true` keeps it for all.
 */
function addUnsignedPayload(stack: { add(middleware: unknown, options: unknown): void }): void {
  type Args = { request?: { headers?: Record<string, string>; body?: unknown } }
  const middleware =
    (next: (args: Args) => Promise<unknown>, context: { commandName?: string }) =>
    (args: Args): Promise<unknown> => {
      const headers = args.request?.headers
      const body = args.request?.body
      const small = ArrayBuffer.isView(body) && body.byteLength < UNSIGNED_FROM
      // A payload hash already there (a put that knows its SHA-256) is kept: that body is signed for free.
      if (headers && !small && !headers[PAYLOAD_HASH] && (context.commandName === 'PutObjectCommand' || context.commandName === 'UploadPartCommand'))
        headers[PAYLOAD_HASH] = 'UNSIGNED-PAYLOAD'
      return next(args)
    }
  stack.add(middleware, { step: 'build', name: 'taskpointUnsignedPayload', override: true })
}

const isCrc32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff

const PAYLOAD_HASH = 'x-amz-content-sha256'
/** Bodies from this size on go up unsigned (unless their SHA-256 is known). */
const UNSIGNED_FROM = 1024 * 1024
const SHA256_HEX = /^[0-9a-f]{64}$/

/** Gives the signer the payload hash a put decided on: the body's SHA-256 (hex) the caller already has, or UNSIGNED-PAYLOAD. */
function addPayloadHash(stack: { add(middleware: unknown, options: unknown): void }, value: string): void {
  type Args = { request?: { headers?: Record<string, string> } }
  const middleware =
    (next: (args: Args) => Promise<unknown>) =>
    (args: Args): Promise<unknown> => {
      const headers = args.request?.headers
      if (headers) headers[PAYLOAD_HASH] = value
      return next(args)
    }
  stack.add(middleware, { step: 'build', name: 'taskpointPayloadHash', override: true })
}

/** Objects in an S3 (or S3-compatible) bucket under a prefix: the driver behind `s3://bucket/prefix`. */
export class S3Storage implements Storage {
  readonly backend = 's3' as const
  readonly capabilities: StorageCapabilities
  readonly uri: string
  readonly prefix: string
  readonly client: S3Client
  private readonly root: ObjectRoot
  private readonly ownsClient: boolean
  private readonly sizes: Required<Pick<S3StorageOptions, 'multipartThreshold' | 'partSize' | 'queueSize' | 'pageSize'>>
  private readonly run: Runner
  private readonly signPayload: boolean
  /** Sends single-request uploads of shared-memory bodies, when the client's config can go to a thread. */
  readonly putThread: S3PutThread | undefined
  private readonly releaseThread: (() => Promise<void>) | undefined
  /** Requests this storage sent from the upload thread. */
  sentFromThread = 0
  /** Whether the user changed `client` (middleware, send): its uploads must then go through it. */
  private customized = false

  constructor(
    readonly bucket: string,
    prefix: string,
    options: S3StorageOptions = {},
  ) {
    this.root = new ObjectRoot('s3', 's3', bucket, prefix, { pattern: /^[a-z0-9][a-z0-9.\-_]{1,254}$/i, hint: '' })
    this.prefix = this.root.prefix
    this.uri = this.root.uri
    const config = options.client ? undefined : s3ClientConfig(options)
    this.client = options.client ?? newS3Client(config!)
    this.ownsClient = !options.client
    if (config && options.uploadThread !== false && isPlainData(config)) {
      const lease = sharedPutThread(config)
      this.putThread = lease.thread
      this.releaseThread = lease.release
    }
    this.signPayload = options.signPayload ?? false
    // Our own client: multipart parts go up unsigned too (a client passed in is left as it is; our
    // single-request puts still are, per command).
    if (this.ownsClient && !this.signPayload) addUnsignedPayload(this.client.middlewareStack)
    if (this.putThread) this.watchCustomization()
    // Many parallel requests hide per-request latency; S3 serves far more than 16 per prefix.
    // Chunks of 8 MiB: one request each, at the multipart threshold (so a single PUT).
    this.capabilities = { conditionalCreate: options.conditionalCreate ?? true, preferredConcurrency: 16, preferredChunkSize: 8 * MiB, takesCrc32: true }
    const where = (key: string | undefined): string => this.root.where(key)
    this.run = operationRunner({
      backend: 's3',
      retry: options.retry,
      stallMs: options.requestTimeoutMs ?? 60_000,
      where,
      mapError: (e, op, key) => mapS3Error(e, { backend: 's3', key: where(key), op }),
    })
    const check = optionChecks('s3')
    // S3's own limits: parts of 5 MiB to 5 GiB, at most 1000 keys a listing page.
    this.sizes = {
      multipartThreshold: check.whole('multipartThreshold', options.multipartThreshold, 8 * MiB, 1, 5 * 1024 * MiB, ' of bytes'),
      partSize: check.whole('partSize', options.partSize, 8 * MiB, 5 * MiB, 5 * 1024 * MiB, ' of bytes'),
      queueSize: check.whole('queueSize', options.queueSize, 4, 1, 64),
      pageSize: check.whole('pageSize', options.pageSize, 1000, 1, 1000),
    }
  }

  /**
   * `client` is public, and before chunks went from a thread, middleware a user added to it (headers
   * a bucket policy requires, tracing) applied to every request: once the user changes its
   * middleware, uploads go through it again. (Comparing the stack before each put would cost
   * ~50 µs per chunk.)
   */
  private watchCustomization(): void {
    const stack = this.client.middlewareStack as unknown as Record<string, (...args: unknown[]) => unknown>
    for (const name of ['add', 'addRelativeTo', 'use', 'remove', 'removeByTag']) {
      const original = stack[name]
      if (typeof original !== 'function') continue
      stack[name] = (...args: unknown[]) => {
        this.customized = true
        return original.apply(stack, args)
      }
    }
  }

  prepareWrites(): void {
    if (this.threadMaySend()) this.putThread?.prestart()
  }

  /** Whether a put of `bytes` goes from the upload thread. */
  private fromThread(bytes: Uint8Array): boolean {
    return this.threadMaySend() && this.putThread?.takes(bytes) === true
  }

  /** Whether requests may bypass `this.client`: not once the user customized it. */
  private threadMaySend(): boolean {
    // An own `send` is a replaced one (a test double, a tracing wrapper): requests must reach it.
    return !this.customized && !Object.hasOwn(this.client, 'send')
  }

  private full(key: string, op: string): string {
    return this.root.full(key, op)
  }

  private details(key: string, op: string): StorageErrorDetails {
    return { backend: 's3', key: this.root.where(key), op }
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    const Key = this.full(key, 'put')
    const cond = options.ifAbsent ? { IfNoneMatch: '*' } : {}
    // Names this call's object. If a create-if-absent's response is lost and the retry meets 412,
    // the token tells our own object (a success) from someone else's (AlreadyExists).
    const token = randomBytes(12).toString('hex')
    const Metadata = { [PUT_TOKEN_META]: token }
    const size = body instanceof Uint8Array ? body.byteLength : body.size
    // Requests of this put on the upload thread. An attempt the runner abandons (a stall, the
    // deadline) is aborted there by message, a little later: the put returns only once each has
    // ended (see settle), so its caller never reuses the body's memory while the thread may still
    // send from it.
    const sending: Promise<unknown>[] = []
    try {
      return await this.run(
        'put',
        key,
        async (a) => {
          try {
            return await this.putOnce(key, Key, body, size, { ...cond, Metadata }, options, a, sending)
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
    } finally {
      if (sending.length > 0) await this.putThread!.settle(sending)
    }
  }

  /** The object at Key if a put carrying `token` wrote it (and it has the expected size). */
  private async ownObject(key: string, Key: string, token: string, size: number | undefined, a: Attempt): Promise<ObjectInfo | undefined> {
    const found = await this.headObject(key, Key, a.signal)
    if (!found || found.metadata?.[PUT_TOKEN_META] !== token || (size !== undefined && found.info.size !== size)) return undefined
    return found.info
  }

  /** HEAD of one object: what it is, and its user metadata; undefined when it does not exist. */
  private async headObject(key: string, Key: string, signal: AbortSignal): Promise<{ info: ObjectInfo; metadata: Record<string, string> | undefined } | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: signal })
      const info: ObjectInfo = { key, size: out.ContentLength ?? 0 }
      if (out.ETag) info.etag = out.ETag
      if (out.LastModified) info.lastModified = out.LastModified
      return { info, metadata: out.Metadata }
    } catch (e) {
      if (isS3NotFound(e)) return undefined
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
    sending: Promise<unknown>[],
  ): Promise<ObjectInfo> {
    if (size !== undefined && size <= this.sizes.multipartThreshold) {
      const bytes = body instanceof Uint8Array ? body : await buffer(Readable.from(body.open()))
      // A known SHA-256 (a chunk's id) is the checksum S3 verifies and the signature's payload hash:
      // the SDK then neither CRC32s nor SHA-256s the body on this thread.
      const sha256 = body instanceof Uint8Array && options.sha256 !== undefined && SHA256_HEX.test(options.sha256) ? options.sha256 : undefined
      // Else a CRC32 computed beside the chunk's hash (off this thread) replaces the SDK's: with any
      // x-amz-checksum-* header present, the SDK computes none.
      const crc = !sha256 && body instanceof Uint8Array && isCrc32(options.crc32) ? options.crc32 : undefined
      const checksum = sha256 ? { ChecksumSHA256: Buffer.from(sha256, 'hex').toString('base64') } : crc !== undefined ? { ChecksumCRC32: checksumBase64(crc) } : {}
      const params = { Bucket: this.bucket, Key, ContentLength: bytes.byteLength, ...checksum, ...extra }
      // The signature's payload hash, for both paths: the known SHA-256, else unsigned from UNSIGNED_FROM
      // on (see addUnsignedPayload), else none (the SDK hashes the small body).
      const payloadHash = sha256 ?? (!this.signPayload && bytes.byteLength >= UNSIGNED_FROM ? 'UNSIGNED-PAYLOAD' : undefined)
      let out: { ETag?: string | undefined }
      if (this.fromThread(bytes)) {
        const sent = this.putThread!.put(params, bytes, payloadHash, a.signal, this.details(key, 'put'))
        this.sentFromThread++
        sending.push(sent.catch(() => {}))
        out = await sent
      } else {
        const cmd = new PutObjectCommand({ ...params, Body: bytes })
        if (payloadHash) addPayloadHash(cmd.middlewareStack, payloadHash)
        out = await this.client.send(cmd, { abortSignal: a.signal })
      }
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
      partSize: this.sizes.partSize,
      queueSize: this.sizes.queueSize,
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

  /** The HTTP Range of a read; get() answers an empty range itself, so length is undefined or > 0 here. */
  private rangeHeader(range: GetOptions['range']): string | undefined {
    if (!range) return undefined
    return range.length === undefined ? `bytes=${range.offset}-` : `bytes=${range.offset}-${range.offset + range.length - 1}`
  }

  async get(key: string, options: GetOptions = {}): Promise<Uint8Array> {
    const Key = this.full(key, 'get')
    if (options.range?.length === 0) {
      await this.headOrThrow(key)
      return new Uint8Array(0)
    }
    const details = this.details(key, 'get')
    return this.run(
      'get',
      key,
      async (a) => {
        let out: GetObjectCommandOutput
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
    if (!info) throw new NotFoundError(this.details(key, 'get'))
    return info
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.full(key, 'head')
    return this.run('head', key, async (a) => (await this.headObject(key, Key, a.signal))?.info)
  }

  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const full = this.root.listPrefix(prefix)
    const after = options.startAfter === undefined ? undefined : this.root.listPrefix('') + options.startAfter
    let token: string | undefined
    do {
      const page = await this.run('list', prefix || undefined, (a) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: full,
            ContinuationToken: token,
            MaxKeys: this.sizes.pageSize,
            ...(after !== undefined && !token ? { StartAfter: after } : {}),
          }),
          {
            abortSignal: a.signal,
          },
        ),
      )
      for (const object of page.Contents ?? []) {
        // A server that ignores StartAfter costs time, never correctness.
        if (!object.Key || (after !== undefined && object.Key <= after)) continue
        const info: ObjectInfo = { key: this.root.keyOf(object.Key), size: object.Size ?? 0 }
        if (object.ETag) info.etag = object.ETag
        if (object.LastModified) info.lastModified = object.LastModified
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
        if (isS3NotFound(e)) return
        throw e
      }
    })
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const full = keys.map((k) => this.full(k, 'delete'))
    for (let i = 0; i < full.length; i += 1000) {
      const batch = full.slice(i, i + 1000)
      await this.run('deleteMany', this.root.keyOf(batch[0] ?? ''), async (a) => {
        const out = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }), {
          abortSignal: a.signal,
        })
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
    let KeyMarker: string | undefined
    let UploadIdMarker: string | undefined
    do {
      const page = await this.run('sweep', undefined, (a) =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: full, KeyMarker, UploadIdMarker }), { abortSignal: a.signal }),
      )
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Key.startsWith(full)) continue
        if (u.Initiated && Date.now() - u.Initiated.getTime() < olderThanMs) continue
        const key = this.root.keyOf(u.Key)
        await this.run('sweep', key, async (a) => {
          try {
            await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: a.signal })
          } catch (e) {
            // Finished or aborted meanwhile: nothing left to sweep.
            if ((e as { name?: string }).name !== 'NoSuchUpload' && s3Status(e) !== 404) throw e
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
    await this.releaseThread?.()
    if (this.ownsClient) this.client.destroy()
  }
}

/** `s3://bucket/prefix`. Registered in registry.ts. */
export const driver = defineDriver<S3StorageOptions>({
  name: 's3',
  open: (location, options) => new S3Storage(location.bucket, location.prefix, options),
})
