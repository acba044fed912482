import type { Worker } from 'node:worker_threads'
import { TransientStorageError, type StorageErrorDetails } from '../errors.js'

/** A request handed to a storage thread: settled by its reply, or failed when the thread ends first. */
export interface WorkerJob<R> {
  resolve: (value: R) => void
  reject: (e: unknown) => void
  details: StorageErrorDetails
  /** Called for each reply that reports on the job without settling it (`{ id, note }`). */
  onNote?: (note: unknown) => void
}

/**
 * The requests of one worker thread of a storage driver (the S3 upload thread, the local file
 * threads), by id. A reply `{ id, value }` or `{ id, error }` settles its request; `{ id, note }`
 * reports on it. The thread holds the process open only while it has requests. When it ends (an
 * error, an exit), `onEnd` tells its owner first, then every request it held fails with a transient
 * error, which the driver's runner retries from the calling thread.
 */
export class WorkerJobs<R> {
  private readonly jobs = new Map<number, WorkerJob<R>>()
  private nextId = 0

  /** `what` names the thread in errors ("upload thread"); `revive` turns a reply's `error` back into the error the driver maps. */
  constructor(
    readonly worker: Worker,
    what: string,
    revive: (fields: Record<string, unknown>) => Error,
    onEnd: () => void,
  ) {
    worker.on('message', (m: { id: number; value?: R; error?: Record<string, unknown>; note?: unknown }) => {
      const job = this.jobs.get(m.id)
      if (!job) return
      if ('note' in m) return job.onNote?.(m.note)
      this.jobs.delete(m.id)
      if (this.jobs.size === 0) worker.unref()
      if (m.error) job.reject(revive(m.error))
      else job.resolve(m.value as R)
    })
    const end = (why: string): void => {
      onEnd()
      for (const job of this.jobs.values()) job.reject(new TransientStorageError(job.details, `the ${what} stopped (${why}); retried from the calling thread`))
      this.jobs.clear()
    }
    worker.on('error', (e) => end(e.message))
    worker.on('exit', (code) => end(`exit code ${code}`))
    // After the listeners: adding a 'message' listener refs the worker again.
    worker.unref()
  }

  /** Requests sent and not yet answered. */
  get size(): number {
    return this.jobs.size
  }

  /** Hands `message` (with an `id` added) to the thread; `sent(id)` runs once it is on its way. */
  send(message: Record<string, unknown>, transfer: ArrayBuffer[], job: Omit<WorkerJob<R>, 'resolve' | 'reject'>, sent?: (id: number) => void): Promise<R> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++
      this.jobs.set(id, { ...job, resolve, reject })
      this.worker.ref()
      this.worker.postMessage({ id, ...message }, transfer)
      sent?.(id)
    })
  }
}
