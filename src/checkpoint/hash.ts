import { createHash } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'

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

class HashPool {
  private workers: Worker[] = []
  private jobs = new Map<number, Job>()
  private busy = new Map<Worker, number>()
  private nextId = 0

  constructor(private readonly size: number) {}

  private pick(): Worker {
    if (this.workers.length < this.size) {
      const w = new Worker(WORKER_SOURCE, { eval: true })
      w.unref()
      w.on('message', ({ id, hash }: { id: number; hash: string }) => {
        this.busy.set(w, (this.busy.get(w) ?? 1) - 1)
        const job = this.jobs.get(id)
        this.jobs.delete(id)
        job?.resolve(hash)
      })
      w.on('error', (e) => {
        // A dead worker fails its jobs; the next request starts a fresh one.
        this.workers = this.workers.filter((x) => x !== w)
        for (const [, job] of this.jobs) job.reject(e)
        this.jobs.clear()
      })
      this.workers.push(w)
      this.busy.set(w, 0)
      return w
    }
    return this.workers.reduce((a, b) => ((this.busy.get(a) ?? 0) <= (this.busy.get(b) ?? 0) ? a : b))
  }

  hash(view: Uint8Array): Promise<string> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++
      this.jobs.set(id, { resolve, reject })
      const w = this.pick()
      this.busy.set(w, (this.busy.get(w) ?? 0) + 1)
      w.ref()
      w.postMessage({ id, buf: view.buffer, off: view.byteOffset, len: view.byteLength })
    }).finally(() => {
      if (this.jobs.size === 0) for (const w of this.workers) w.unref()
    }) as Promise<string>
  }
}

let pool: HashPool | undefined
// Below this, posting to a worker costs more than hashing in place (and small states never start the pool).
const SMALL = 1024 * 1024

export function sha256Sync(view: Uint8Array): string {
  return createHash('sha256').update(view).digest('hex')
}

/** sha256 hex of `view`: on a worker thread when the bytes are shared and large, else in place. */
export function sha256(view: Uint8Array): Promise<string> | string {
  if (view.byteLength < SMALL || !(view.buffer instanceof SharedArrayBuffer)) return sha256Sync(view)
  pool ??= new HashPool(Math.max(1, Math.min(4, availableParallelism())))
  return pool.hash(view)
}

/** A zero-filled byte array in shared memory, so `sha256` can hash it off the main thread. */
export function sharedBytes(size: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(size))
}
