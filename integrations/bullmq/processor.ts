import type { Job } from 'bullmq'
import type { CheckpointerOptions } from '../../src/checkpoint/checkpointer.js'
import { consoleLogger, currentContext, type TaskContext, type TaskLogger } from '../../src/runtime/context.js'
import type { PreemptionWatcher } from '../../src/runtime/preemption.js'
import { task } from '../../src/runtime/task.js'
import { cleanupCompleted, type CompletedPolicy } from './cleanup.js'
import { classifyJobError, letGo, permanent, requeue, type JobOutcome } from './errors.js'
import { BullmqConfigError, jobCheckpointUri } from './location.js'
import { ProgressReporter, type FleetProgress } from './progress.js'

/** What a job handler gets: the task context (also reachable as `currentContext()`) and the job. */
export interface JobContext extends TaskContext {
  readonly job: Job
  /** The worker's lock token for this run of the job. */
  readonly token: string | undefined
  /** Where this job's checkpoints live (`<base>/<queue>/<job id>` by default). */
  readonly uri: string
  /** Merges `patch` into `job.progress` (sent in the background, newest wins). `step` is kept monotonic. */
  progress(patch: FleetProgress): void
}

export type JobHandler<D = unknown, R = unknown> = (job: Job<D, R>, ctx: JobContext) => Promise<R> | R

export interface CheckpointedOptions {
  /**
   * Where checkpoints live: a base URI (`s3://bucket/fleet`, `gs://…`, a local path shared by the
   * workers of one host) under which each job gets `<queue>/<job id>`, or a function of the job.
   * Required: a fleet only works when every worker derives the same place for the same job.
   */
  checkpoint: string | ((job: Job) => string)
  /** Passed to each job's Checkpointer (retention `keep`, storage clients, …). Default: keep all while running. */
  checkpointOptions?: CheckpointerOptions
  /** A started watcher: on preemption the job's signal aborts, it saves and goes back to the queue. `runFleetWorker` passes its own. */
  preemption?: PreemptionWatcher
  /** Per run of a job, e.g. '2h'. On expiry the run is aborted and fails as recoverable (spends an attempt). Default: none. */
  timeout?: string | number
  /** What happens to a job's checkpoints once BullMQ has recorded it completed. Default `'final'`. */
  onCompleted?: CompletedPolicy
  /** Send checkpoint transfer progress and steps to `job.updateProgress`. Default true. */
  progress?: boolean
  /** Default: lines on stderr prefixed with the queue name. */
  logger?: TaskLogger
  /** Told how each run ended (for metrics and logs). */
  onOutcome?: (job: Job, outcome: JobOutcome | 'completed', error?: unknown) => void
}

/** A BullMQ processor with the completion clean-up it needs wired to `worker.on('completed')`. */
export interface CheckpointedProcessor<D = unknown, R = unknown> {
  (job: Job<D, R>, token?: string): Promise<R>
  /** Applies the `onCompleted` policy; call from `worker.on('completed', …)` (runFleetWorker does). */
  afterCompleted(job: Job<D, R>): Promise<void>
  /** Where the job's checkpoints live. */
  uriOf(job: Job<D, R>): string
}

/**
 * Wraps a job handler as a BullMQ processor in which each run of a job is a taskpoint task: it
 * sees the checkpoints every earlier run committed (on any worker), claims them first so an older
 * run that is still alive somewhere is fenced, and ends in the way BullMQ must see it:
 * recoverable errors and storage faults are retried with the job's `attempts`/`backoff`, other
 * errors fail the job at once, and a preempted run saves and goes back to the queue without
 * spending an attempt.
 */
export function checkpointed<D = unknown, R = unknown>(handler: JobHandler<D, R>, options: CheckpointedOptions): CheckpointedProcessor<D, R> {
  if (!options || (typeof options.checkpoint !== 'string' && typeof options.checkpoint !== 'function')) {
    throw new BullmqConfigError('checkpointed(handler, { checkpoint }) needs a checkpoint base (s3://bucket/fleet, gs://…, or a path all workers share)')
  }
  const co = options.checkpointOptions ?? {}
  const uriOf = (job: Job<D, R>): string =>
    typeof options.checkpoint === 'function' ? options.checkpoint(job as Job) : jobCheckpointUri(options.checkpoint, job.queueName, job.id)

  const processor = async (job: Job<D, R>, token?: string): Promise<R> => {
    const log = options.logger ?? consoleLogger(`taskpoint:${job.queueName}:${job.id}`)
    const uri = uriOf(job)
    const reporter = new ProgressReporter(job as Job, log)
    const run = task<undefined, R>(
      {
        name: job.queueName,
        // BullMQ owns the retries: one run here is one attempt there.
        retries: 0,
        systemRetries: 0,
        checkpoint: uri,
        // The attempt recorded in manifests is BullMQ's count of failed attempts: a preemption
        // does not change it, a real failure does.
        attemptOffset: job.attemptsMade,
        ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
        ...(options.preemption ? { preemption: options.preemption } : {}),
        logger: log,
        checkpointOptions: {
          ...co,
          onProgress: (p) => {
            co.onProgress?.(p)
            if (options.progress !== false) reporter.fromCheckpoint(p)
          },
        },
      },
      async () => {
        const ctx = currentContext()
        const jobCtx: JobContext = {
          taskName: ctx.taskName,
          taskVersion: ctx.taskVersion,
          attempt: ctx.attempt,
          checkpoint: ctx.checkpoint,
          signal: ctx.signal,
          log: ctx.log,
          onPreempt: ctx.onPreempt,
          job: job as Job,
          token,
          uri,
          progress: (patch) => reporter.set(patch),
        }
        return handler(job, jobCtx)
      },
    )
    try {
      const out = await run(undefined)
      await reporter.flush()
      options.onOutcome?.(job as Job, 'completed')
      return out
    } catch (e) {
      await reporter.flush()
      const outcome = classifyJobError(e, options.preemption?.preempted !== undefined)
      options.onOutcome?.(job as Job, outcome, e)
      switch (outcome) {
        case 'superseded':
          log.warn(`job ${job.id}: a newer run on another worker owns this job now (${(e as Error).message}); letting go without touching it`)
          throw letGo()
        case 'preempted': {
          const r = await requeue(job as Job, token)
          if (r.moved) log.info(`job ${job.id}: preempted; checkpoint saved and the job is back in the queue (attempts made stays ${job.attemptsMade})`)
          else log.warn(`job ${job.id}: preempted, but the job is no longer ours to requeue (${r.why}); leaving it to its new owner`)
          throw r.error
        }
        case 'recoverable':
          throw e
        case 'permanent':
          throw permanent(e)
      }
    }
  }
  return Object.assign(processor, {
    afterCompleted: (job: Job<D, R>) => cleanupCompleted(uriOf(job), options.onCompleted ?? 'final', co),
    uriOf,
  })
}
