import { Worker, type ConnectionOptions, type WorkerOptions } from 'bullmq'
import { consoleLogger, type TaskLogger } from '../../src/runtime/context.js'
import { DEFAULT_EXIT_CODES, preemptionFromEnv } from '../../src/runtime/main.js'
import { PreemptionWatcher, type PreemptionOptions } from '../../src/runtime/preemption.js'
import { BullmqConfigError } from './location.js'
import { checkpointed, type CheckpointedOptions, type CheckpointedProcessor, type JobHandler } from './processor.js'

export interface FleetWorkerOptions extends Omit<CheckpointedOptions, 'preemption'> {
  queue: string
  /** ioredis options or an ioredis instance, as for any BullMQ Worker. */
  connection: ConnectionOptions
  /**
   * Passed to BullMQ's Worker. Defaults that differ from BullMQ's: `maxStalledCount: 10` (a spot
   * worker killed without notice stalls its job; BullMQ's default of 1 would fail a job on its
   * second SIGKILL). Keep `concurrency` at 1 for tfjs jobs: they share one seeded Math.random.
   */
  worker?: Partial<WorkerOptions>
  /** Signals and cloud notices that mean "this machine is going away", or a started watcher. Default SIGTERM/SIGINT plus TASKPOINT_WATCH_* env. */
  preemption?: PreemptionOptions | PreemptionWatcher
  /** After preemption: how long the running jobs may take to save and requeue before the worker gives up on them (they then stall and are recovered elsewhere). Default 25 s. */
  graceMs?: number
  /** Exit the process once the worker has closed after a preemption (with `exitCode`, default 143). Default true. */
  exit?: boolean
  exitCode?: number
  logger?: TaskLogger
}

export interface FleetWorker<D = unknown, R = unknown> {
  readonly worker: Worker<D, R>
  readonly watcher: PreemptionWatcher
  readonly processor: CheckpointedProcessor<D, R>
  /** Resolves when the worker has closed: after a preemption (`'preempted'`) or `close()` (`'closed'`). */
  readonly done: Promise<'preempted' | 'closed'>
  /** Stops fetching jobs, waits for the running ones, and closes (completion clean-ups included). */
  close(): Promise<void>
}

/**
 * A BullMQ worker for a fleet of preemptible machines: every job runs checkpointed (see
 * `checkpointed`); on SIGTERM or a spot notice the running jobs save, go back to the queue without
 * spending an attempt, the worker closes cleanly and the process exits with 143.
 */
export function runFleetWorker<D = unknown, R = unknown>(handler: JobHandler<D, R>, options: FleetWorkerOptions): FleetWorker<D, R> {
  if (!options || typeof options.queue !== 'string' || options.queue === '')
    throw new BullmqConfigError('runFleetWorker(handler, { queue, connection, checkpoint }) needs a queue name')
  if (!options.connection)
    throw new BullmqConfigError('runFleetWorker needs a Redis connection, e.g. { connection: { host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null } }')
  const log = options.logger ?? consoleLogger(`taskpoint:worker:${options.queue}`)
  const watcher = options.preemption instanceof PreemptionWatcher ? options.preemption : new PreemptionWatcher(options.preemption ?? preemptionFromEnv()).start()
  const processor = checkpointed<D, R>(handler, { ...options, preemption: watcher, logger: options.logger ?? log })
  const worker = new Worker<D, R>(options.queue, processor, { maxStalledCount: 10, ...options.worker, connection: options.connection })
  const cleanups = new Set<Promise<void>>()
  worker.on('completed', (job) => {
    const p: Promise<void> = processor
      .afterCompleted(job)
      .catch((e: Error) => log.warn(`job ${job.id}: completed, but cleaning up its checkpoints failed (${e.message}); they stay`))
      .finally(() => cleanups.delete(p))
    cleanups.add(p)
  })
  // An EventEmitter 'error' without a listener kills the process: lock renewals that fail (a job
  // taken over by another worker) and lost connections are reported here instead.
  worker.on('error', (e) => log.warn(`worker: ${e.message}`))

  let closing: Promise<void> | undefined
  const close = (force = false): Promise<void> =>
    (closing ??= (async () => {
      await worker.close(force)
      while (cleanups.size > 0) await Promise.all([...cleanups])
      if (!(options.preemption instanceof PreemptionWatcher)) watcher.stop()
    })())

  const done = new Promise<'preempted' | 'closed'>((resolve) => {
    const onPreempt = async (): Promise<void> => {
      log.info(`${watcher.preempted}: running jobs save and go back to the queue; closing the worker`)
      const graceMs = options.graceMs ?? 25_000
      let timer: NodeJS.Timeout | undefined
      const gaveUp = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), graceMs)))
      const r = await Promise.race([close().then(() => 'closed' as const), gaveUp])
      clearTimeout(timer)
      if (r === 'timeout') {
        log.warn(`jobs did not stop within the ${graceMs} ms grace period: leaving them to the stalled-job checker (they resume elsewhere from their last checkpoint)`)
        await worker.close(true).catch(() => {})
      }
      resolve('preempted')
      if (options.exit !== false) process.exit(options.exitCode ?? DEFAULT_EXIT_CODES.preempted)
    }
    if (watcher.signal.aborted) void onPreempt()
    else watcher.signal.addEventListener('abort', () => void onPreempt(), { once: true })
    worker.once('closed', () => {
      if (!watcher.preempted) resolve('closed')
    })
  })
  return { worker, watcher, processor, done, close: () => close() }
}
