import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import * as zlib from 'node:zlib'
import { TaskpointError } from '../errors.js'
import { BLAKE3_ID_PREFIX, chunkDigest, isBlake3Id, sha256Hex } from '../format/manifest.js'
import { startUpTo } from '../worker-starts.js'

// Chunks are named by BLAKE3 (format 2): ~5 GB/s per core here against ~1.5 GB/s for sha256, which
// made hashing, not the disk, the limit of verified reads and durable saves. The native module
// (@napi-rs/blake-hash, prebuilt binaries in the registry) is loaded if it can be; where it cannot,
// chunks are named by sha256 as in format 1, and both kinds stay readable everywhere sha256 is.
// Bytes in shared memory (snapshots of a background commit, chunks read from disk) are hashed by
// worker threads without copying, so a background commit does not take the training loop's
// thread; anything else (a verified read's result, which must be ordinary memory) is hashed in place.

export type HashAlgorithm = 'sha256' | 'blake3'

interface Blake3 {
  /** Resolved path of the native module, for worker threads to load. */
  path: string
  blake3(data: Uint8Array): Uint8Array
}

function loadBlake3(): Blake3 | undefined {
  try {
    const require = createRequire(import.meta.url)
    const path = require.resolve('@napi-rs/blake-hash')
    const m = require(path) as { blake3(data: Uint8Array): Uint8Array }
    m.blake3(new Uint8Array(1))
    return { path, blake3: m.blake3 }
  } catch {
    return undefined
  }
}

const native = loadBlake3()

/**
 * The algorithm new chunks are named by in this process. TASKPOINT_HASH=sha256 chooses sha256 (as
 * where the native module is missing) for new chunks only: BLAKE3 checkpoints stay readable.
 */
export const CHUNK_ALGORITHM: HashAlgorithm = native && process.env.TASKPOINT_HASH !== 'sha256' ? 'blake3' : 'sha256'

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { crc32 } = require('node:zlib')
const b3 = workerData && workerData.blake3 ? require(workerData.blake3).blake3 : undefined
parentPort.on('message', ({ id, buf, off, len, algo, crc }) => {
  const view = new Uint8Array(buf, off, len)
  const hash = algo === 'blake3' ? Buffer.from(b3(view)).toString('hex') : createHash('sha256').update(view).digest('hex')
  parentPort.postMessage({ id, hash, crc32: crc && crc32 ? crc32(view) : undefined })
})
parentPort.postMessage({ ready: true })
`

/** A digest, and the bytes' CRC32 (IEEE) where it was asked for and zlib has it (Node >= 20.15). */
export interface Hashed {
  hash: string
  crc32?: number
}

interface Job {
  resolve: (out: Hashed) => void
  reject: (e: unknown) => void
}

/**
 * A fixed number of hashing threads, started on demand. Each worker owns its pending jobs: a
 * worker that dies (an error, or an exit without one) fails only the jobs it held, never those of
 * the others, and is replaced by the next request. A worker holds the process open only while it
 * has jobs.
 */
export class HashPool {
  /** Each live worker and the jobs it was handed, by id. */
  private readonly workers = new Map<Worker, Map<number, Job>>()
  /** Workers that have started and taken their listener (see `hasReady`). */
  private readonly ready = new Set<Worker>()
  private nextId = 0

  /** `source` is the worker's code (tests hand in one that misbehaves on purpose). */
  constructor(
    private readonly size: number,
    private readonly source = WORKER_SOURCE,
  ) {}

  private start(): [Worker, Map<number, Job>] {
    // No flags of the parent: the source is CommonJS, and an inherited --input-type=module (node -e
    // scripts) would make the worker fail to parse it. An empty list, not the parent's minus that
    // flag: a list given here is parsed anew, and process-wide flags as common as
    // --max-old-space-size or --expose-gc make the Worker constructor throw
    // ERR_WORKER_INVALID_EXEC_ARGV (V8 flags apply to every thread anyway).
    const w = new Worker(this.source, { eval: true, execArgv: [], workerData: { blake3: native?.path } })
    const pending = new Map<number, Job>()
    this.workers.set(w, pending)
    w.on('message', ({ id, hash, crc32, ready }: { id: number; hash: string; crc32?: number; ready?: true }) => {
      if (ready) {
        // Not after its death: an error can be delivered before a 'ready' posted just ahead of it.
        if (this.workers.get(w) === pending) this.ready.add(w)
        return
      }
      const job = pending.get(id)
      pending.delete(id)
      if (pending.size === 0) w.unref()
      job?.resolve(crc32 === undefined ? { hash } : { hash, crc32 })
    })
    const die = (e: unknown): void => {
      if (this.workers.get(w) !== pending) return // already retired
      this.workers.delete(w)
      this.ready.delete(w)
      for (const job of pending.values()) job.reject(e)
      pending.clear()
    }
    w.on('error', die)
    // An exit without an error would otherwise leave its jobs waiting forever.
    w.on('exit', (code) => die(new Error(`hashing worker thread exited (code ${code}) with jobs pending`)))
    // After the listeners: adding a 'message' listener refs the worker again, and an idle one
    // (started ahead of any job) must not keep a finished process alive.
    w.unref()
    return [w, pending]
  }

  /** Whether some worker has started: jobs sent before then wait for it (~30-45 ms for the first). */
  hasReady(): boolean {
    return this.ready.size > 0
  }

  /**
   * Starts every worker ahead of the first jobs, so that they do not wait ~30 ms each for one: one
   * after another (see worker-starts.ts). Idle ones hold nothing open.
   */
  prestart(): void {
    startUpTo(
      this.size,
      () => this.workers.size,
      () => this.start()[0],
    )
  }

  /** A new worker while below `size`, else the one with the fewest pending jobs. */
  private pick(): [Worker, Map<number, Job>] {
    if (this.workers.size < this.size) return this.start()
    let best: [Worker, Map<number, Job>] | undefined
    for (const entry of this.workers) if (!best || entry[1].size < best[1].size) best = entry
    return best ?? this.start()
  }

  hash(view: Uint8Array, algo: HashAlgorithm = 'sha256'): Promise<string> {
    return this.hashWith(view, algo, false).then((h) => h.hash)
  }

  /** The digest and, with `crc`, the CRC32 too, both computed on the worker. */
  hashWith(view: Uint8Array, algo: HashAlgorithm, crc: boolean): Promise<Hashed> {
    return new Promise<Hashed>((resolve, reject) => {
      const id = this.nextId++
      const [w, pending] = this.pick()
      pending.set(id, { resolve, reject })
      w.ref()
      w.postMessage({ id, buf: view.buffer, off: view.byteOffset, len: view.byteLength, algo, crc })
    })
  }
}

let pool: HashPool | undefined
// Below this, posting to a worker costs more than hashing in place (and small states never start the pool).
const SMALL = 256 * 1024

function hashInPlace(view: Uint8Array, algo: HashAlgorithm): string {
  if (algo === 'sha256') return sha256Hex(view)
  if (!native) throw new Error('BLAKE3 is not available in this process')
  const d = native.blake3(view)
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex')
}

const offThread = (view: Uint8Array): boolean => view.byteLength >= SMALL && view.buffer instanceof SharedArrayBuffer

function hashPool(): HashPool {
  pool ??= new HashPool(Math.max(1, Math.min(4, availableParallelism())))
  return pool
}

/**
 * Starts the hashing threads ahead of the first chunk (a writer does when it claims the location;
 * a task attempt claims at its start): the first checkpoint then does not wait for them to start,
 * ~30 ms each here. Best effort.
 */
export function warmHashing(): void {
  try {
    hashPool().prestart()
  } catch {
    // Threads that cannot start here (the permission model without --allow-worker, a resource
    // limit) are no reason to fail the claim: small writes hash in place without them, and a write
    // that needs them reports why.
  }
}

/** Hex digest of `view`: on a worker thread when the bytes are shared and large, else in place. */
export function digest(view: Uint8Array, algo: HashAlgorithm): Promise<string> | string {
  return offThread(view) ? hashPool().hash(view, algo) : hashInPlace(view, algo)
}

export function sha256(view: Uint8Array): Promise<string> | string {
  return digest(view, 'sha256')
}

/** The id a digest by CHUNK_ALGORITHM names a chunk by: `b3-<hex>`, or bare sha256 hex. */
const idOf = (hex: string): string => (CHUNK_ALGORITHM === 'blake3' ? BLAKE3_ID_PREFIX + hex : hex)

/** The content id a new chunk is stored under (see ChunkRef.hash): `b3-<hex>`, or sha256 hex without BLAKE3. */
export function chunkId(view: Uint8Array): Promise<string> | string {
  const d = digest(view, CHUNK_ALGORITHM)
  return typeof d === 'string' ? idOf(d) : d.then(idOf)
}

/**
 * The chunk id and, with `withCrc32` and when the bytes are hashed on a worker thread anyway, their
 * CRC32 from the same thread: a store that checks uploads by CRC32 (S3) then takes it instead of
 * computing it on the calling thread. No CRC32 where small or unshared bytes are hashed in place.
 * `inPlaceUntilReady`: while no hashing thread has started yet, hash on the calling thread instead
 * of waiting for one (for writes a caller awaits, never for background ones), with zlib's CRC32.
 */
export async function hashChunk(view: Uint8Array, withCrc32: boolean, inPlaceUntilReady = false): Promise<Hashed> {
  if (inPlaceUntilReady && offThread(view) && !hashPool().hasReady()) {
    // A caller waits for this write: its own thread hashes while the threads start, rather than
    // idling ~30-45 ms for the first of them (a restarted process's first save).
    warmHashing()
    const hash = idOf(hashInPlace(view, CHUNK_ALGORITHM))
    // The CRC32 as the thread would have sent it (zlib's, Node >= 20.15): else the S3 SDK computes one, slower.
    const crc = withCrc32 ? (zlib as { crc32?: (d: Uint8Array) => number }).crc32?.(view) : undefined
    return crc === undefined ? { hash } : { hash, crc32: crc }
  }
  if (!withCrc32 || !offThread(view)) return { hash: await chunkId(view) }
  const h = await hashPool().hashWith(view, CHUNK_ALGORITHM, true)
  return { ...h, hash: idOf(h.hash) }
}

/**
 * Whether `view` hashes to `id`, by the algorithm the id names. A BLAKE3 id where the native module
 * is missing cannot be checked: that is an error, never a pass.
 */
export async function matchesChunkId(view: Uint8Array, id: string): Promise<boolean> {
  if (!isBlake3Id(id)) return (await digest(view, 'sha256')) === id
  if (!native) {
    throw new TaskpointError(
      'UnsupportedFormat',
      'this checkpoint names its chunks by BLAKE3, but the native module @napi-rs/blake-hash does not load on this platform: reinstall taskpoint with its dependencies',
    )
  }
  return (await digest(view, 'blake3')) === chunkDigest(id)
}

/** A zero-filled byte array in shared memory, so hashing can run off the main thread. */
export function sharedBytes(size: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(size))
}
