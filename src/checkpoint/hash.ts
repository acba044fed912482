import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { sha256Hex } from '../format/manifest.js'

// sha256 runs at ~1 GB/s per core here: hashing a 256 MiB checkpoint on the main thread would
// take a quarter second from the training loop. Bytes in shared memory are hashed by worker
// threads instead, without copying; anything else is hashed in place on the caller's thread.

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buf, off, len }) => {
  parentPort.postMessage({ id, hash: createHash('sha256').update(new Uint8Array(buf, off, len)).digest('hex') })
})
`

interface Job {
  resolve: (hash: string) => void
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
  private nextId = 0

  /** `source` is the worker's code (tests hand in one that misbehaves on purpose). */
  constructor(
    private readonly size: number,
    private readonly source = WORKER_SOURCE,
  ) {}

  private start(): [Worker, Map<number, Job>] {
    const w = new Worker(this.source, { eval: true })
    const pending = new Map<number, Job>()
    this.workers.set(w, pending)
    w.unref()
    w.on('message', ({ id, hash }: { id: number; hash: string }) => {
      const job = pending.get(id)
      pending.delete(id)
      if (pending.size === 0) w.unref()
      job?.resolve(hash)
    })
    const die = (e: unknown): void => {
      if (this.workers.get(w) !== pending) return // already retired
      this.workers.delete(w)
      for (const job of pending.values()) job.reject(e)
      pending.clear()
    }
    w.on('error', die)
    // An exit without an error would otherwise leave its jobs waiting forever.
    w.on('exit', (code) => die(new Error(`sha256 worker thread exited (code ${code}) with jobs pending`)))
    return [w, pending]
  }

  /** A new worker while below `size`, else the one with the fewest pending jobs. */
  private pick(): [Worker, Map<number, Job>] {
    if (this.workers.size < this.size) return this.start()
    let best: [Worker, Map<number, Job>] | undefined
    for (const entry of this.workers) if (!best || entry[1].size < best[1].size) best = entry
    return best ?? this.start()
  }

  hash(view: Uint8Array): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const id = this.nextId++
      const [w, pending] = this.pick()
      pending.set(id, { resolve, reject })
      w.ref()
      w.postMessage({ id, buf: view.buffer, off: view.byteOffset, len: view.byteLength })
    })
  }
}

let pool: HashPool | undefined
// Below this, posting to a worker costs more than hashing in place (and small states never start the pool).
const SMALL = 1024 * 1024

/** sha256 hex of `view`: on a worker thread when the bytes are shared and large, else in place. */
export function sha256(view: Uint8Array): Promise<string> | string {
  if (view.byteLength < SMALL || !(view.buffer instanceof SharedArrayBuffer)) return sha256Hex(view)
  pool ??= new HashPool(Math.max(1, Math.min(4, availableParallelism())))
  return pool.hash(view)
}

/** A zero-filled byte array in shared memory, so `sha256` can hash it off the main thread. */
export function sharedBytes(size: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(size))
}

/** The content id a new chunk is stored under (see ChunkRef.hash). */
export function chunkId(view: Uint8Array): Promise<string> | string {
  return sha256(view)
}

/** Whether `view` hashes to `id`, by the algorithm the id names. */
export async function matchesChunkId(view: Uint8Array, id: string): Promise<boolean> {
  return (await sha256(view)) === id
}
