import { type PutObjectCommandInput, type S3ClientConfig, S3ServiceException } from '@aws-sdk/client-s3'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { TransientStorageError, type StorageErrorDetails } from '../errors.js'
import { WorkerJobs } from './worker-jobs.js'
import { startUpTo } from '../worker-starts.js'

// Why a thread: a PutObject of a 8 MiB chunk costs the calling thread ~1 ms of the SDK's middleware
// and, in the socket writes, a kernel copy of every byte (over TLS, its encryption too): ~18 % of a
// background commit's duration on the training loop's thread in `npm run bench`. Chunks already
// live in shared memory (snapshots, chunk buffers), so a thread with its own client can send them
// without a copy. Only the sending moves: what to send (headers, checksums, the payload hash) is
// decided by the driver on the calling thread, and so are retries, fencing tokens and error mapping,
// so both paths share one implementation of everything but `client.send`.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
const { S3Client, PutObjectCommand, S3ServiceException } = require(workerData.sdk)
const client = new S3Client(workerData.config)
const inflight = new Map()
const FIELDS = ['name', 'message', 'code', 'Code', '$fault', '$retryable', '$metadata']
function plain(e, depth) {
  if (e === null || typeof e !== 'object') return { message: String(e) }
  const o = { service: e instanceof S3ServiceException }
  for (const k of FIELDS) {
    if (e[k] === undefined) continue
    try { o[k] = structuredClone(e[k]) } catch { o[k] = String(e[k]) }
  }
  if (e.cause !== undefined && e.cause !== e && depth < 4) o.cause = plain(e.cause, depth + 1)
  return o
}
parentPort.on('message', async (m) => {
  if (m.abort !== undefined) return inflight.get(m.abort)?.abort()
  const ac = new AbortController()
  inflight.set(m.id, ac)
  try {
    const cmd = new PutObjectCommand({ ...m.params, Body: new Uint8Array(m.buf, m.off, m.len) })
    if (m.payloadHash) {
      const set = (next) => (args) => {
        if (args.request && args.request.headers) args.request.headers['x-amz-content-sha256'] = m.payloadHash
        return next(args)
      }
      cmd.middlewareStack.add(set, { step: 'build', name: 'taskpointPayloadHash', override: true })
    }
    const out = await client.send(cmd, { abortSignal: ac.signal })
    parentPort.postMessage({ id: m.id, value: out.ETag === undefined ? {} : { ETag: out.ETag } })
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: plain(e, 0) })
  } finally {
    inflight.delete(m.id)
  }
})
`

/** What put() sends besides the body: everything PutObject takes but `Body`. */
export type PutParams = Omit<PutObjectCommandInput, 'Body'>

/** A value a thread receives exactly as it is: no functions, no class instances (which arrive as bare objects). */
export function isPlainData(v: unknown, depth = 0): boolean {
  if (v === null || v === undefined) return true
  const t = typeof v
  if (t === 'string' || t === 'number' || t === 'boolean') return true
  if (t !== 'object' || depth > 8) return false
  if (Array.isArray(v)) return v.every((x) => isPlainData(x, depth + 1))
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return false
  return Object.values(v as object).every((x) => isPlainData(x, depth + 1))
}

/**
 * One worker thread that sends PutObject requests for bodies in shared memory, with its own client
 * built from the same config. Started on the first upload; holds the process open only while it
 * has requests. A thread that fails (cannot start, dies) fails only the requests it held, with a
 * transient error, and is not used again: those requests, retried, and all later ones go from the
 * calling thread.
 */
export class S3PutThread {
  private thread: WorkerJobs<{ ETag?: string }> | undefined
  private broken = false
  /** Whether this thread has stopped, or could not start: it takes nothing more. */
  get stopped(): boolean {
    return this.broken
  }
  /** Whether the thread has been started (and not found unable to run). */
  get started(): boolean {
    return this.thread !== undefined
  }
  /** Requests sent and not yet answered by the thread. */
  get inFlight(): number {
    return this.thread?.size ?? 0
  }

  /** `source` is the thread's code (tests hand in one that misbehaves on purpose). */
  constructor(
    private readonly config: S3ClientConfig,
    private readonly source = WORKER_SOURCE,
  ) {}

  /** Whether put() takes `body`: bytes in shared memory, and a thread that runs. */
  takes(body: Uint8Array): boolean {
    return body.buffer instanceof SharedArrayBuffer && this.startNow()
  }

  /** Starts the thread now unless it runs already; false when it cannot run. */
  private startNow(): boolean {
    if (this.broken) return false
    try {
      this.thread ??= this.start()
      return true
    } catch {
      // The permission model without --allow-worker, a resource limit: the calling thread sends.
      this.broken = true
      return false
    }
  }

  /** Starts the thread ahead of the first upload, after the threads queued before it (see worker-starts.ts). */
  prestart(): void {
    // Unless started on demand meanwhile.
    startUpTo(
      1,
      () => (this.thread ? 1 : 0),
      () => (this.startNow() ? this.thread!.worker : undefined),
    )
  }

  private start(): WorkerJobs<{ ETag?: string }> {
    const sdk = createRequire(import.meta.url).resolve('@aws-sdk/client-s3')
    // No flags of the parent (see HashPool.start): the source is CommonJS.
    const w = new Worker(this.source, { eval: true, execArgv: [], workerData: { sdk, config: this.config } })
    const jobs: WorkerJobs<{ ETag?: string }> = new WorkerJobs(w, 'upload thread', revive, () => {
      this.broken = true
      if (this.thread === jobs) this.thread = undefined
    })
    return jobs
  }

  /** Sends one PutObject of `body` (shared memory: see takes()). `payloadHash` is the x-amz-content-sha256 to sign with, if set. */
  put(params: PutParams, body: Uint8Array, payloadHash: string | undefined, signal: AbortSignal, details: StorageErrorDetails): Promise<{ ETag?: string }> {
    const thread = this.thread
    if (!thread) return Promise.reject(new TransientStorageError(details, 'the upload thread stopped; retried from the calling thread'))
    // As the SDK does for a signal aborted before it sends: nothing is sent, nothing is stored.
    if (signal.aborted) return Promise.reject(signal.reason)
    const message = { params, buf: body.buffer, off: body.byteOffset, len: body.byteLength, payloadHash }
    // The runner stops waiting for an aborted attempt itself; this stops the request too, and its
    // reply (an AbortError) settles the promise: it never settles before the thread is done.
    const abortWhenAsked = (id: number): void => signal.addEventListener('abort', () => this.thread?.worker.postMessage({ abort: id }), { once: true })
    return thread.send(message, [], { details }, abortWhenAsked)
  }

  /**
   * Waits until every one of `requests` has ended. A thread that has not answered an aborted
   * request within `graceMs` (it answers in well under a millisecond) is stopped: its requests end
   * then, so no caller waits on it for ever.
   */
  async settle(requests: Promise<unknown>[], graceMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((r) => (timer = setTimeout(r, graceMs)))
    const all = Promise.allSettled(requests)
    if ((await Promise.race([all.then(() => true), late.then(() => false)])) === false) await this.close()
    clearTimeout(timer)
    await all
  }

  async close(): Promise<void> {
    const thread = this.thread
    this.thread = undefined
    this.broken = true
    if (thread) await thread.worker.terminate()
  }
}

/** Threads by config, shared by the storages built from equal configs. */
const threads = new Map<string, { thread: S3PutThread; users: number }>()

/**
 * The upload thread for `config`, shared with every open storage built from an equal config (a
 * thread holds its own copy of the SDK, ~20 MiB: one per storage would add up where storages are
 * opened often, or dropped without close()). A stopped thread is replaced for later callers.
 * `release()` once the storage closes: the last one out stops the thread.
 */
export function sharedPutThread(config: S3ClientConfig): { thread: S3PutThread; release: () => Promise<void> } {
  const key = JSON.stringify(config)
  let entry = threads.get(key)
  if (!entry || entry.thread.stopped) threads.set(key, (entry = { thread: new S3PutThread(config), users: 0 }))
  entry.users++
  const mine = entry
  let released = false
  return {
    thread: mine.thread,
    release: async () => {
      if (released) return
      released = true
      if (--mine.users > 0) return
      if (threads.get(key) === mine) threads.delete(key)
      await mine.thread.close()
    },
  }
}

/**
 * An SDK error from the thread, with the fields that classify it (mapS3Error reads them): an
 * S3ServiceException again if it was one (not its subclass, whose name it keeps), else an Error.
 * What does not cross: the raw `$response` and the stack.
 */
function revive(fields: Record<string, unknown>): Error {
  const message = String(fields.message ?? 'upload failed in the upload thread')
  const e = (
    fields.service
      ? new S3ServiceException({ name: String(fields.name ?? 'S3ServiceException'), $fault: fields.$fault === 'server' ? 'server' : 'client', $metadata: {}, message })
      : new Error(message)
  ) as Error & Record<string, unknown>
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'message' || k === 'service') continue
    if (k === 'cause') e.cause = revive(v as Record<string, unknown>)
    else if (k === 'name') e.name = String(v)
    else e[k] = v
  }
  return e
}
