import * as bullmq from 'bullmq'
import type { Job } from 'bullmq'
import { FencedError } from '../../src/checkpoint/checkpointer.js'
import { isTransient } from '../../src/errors.js'
import { runInIoScope } from '../../src/io-scope.js'
import { PreemptedError, RecoverableError } from '../../src/runtime/errors.js'

/**
 * How a job attempt ended, in BullMQ's terms:
 * - `recoverable`: a RecoverableError (or timeout) or a storage fault that outlived its retries:
 *   a normal failure, retried with the job's `attempts`/`backoff`.
 * - `permanent`: anything else: UnrecoverableError, the job fails at once whatever `attempts` says.
 * - `preempted`: the worker is going away; the job saved and goes back to the queue without
 *   spending an attempt.
 * - `superseded`: a newer attempt (on another worker) has claimed the job's checkpoints: this
 *   worker lost the job and must let go without touching its state.
 */
export type JobOutcome = 'recoverable' | 'permanent' | 'preempted' | 'superseded'

export function classifyJobError(error: unknown, preempted: boolean): JobOutcome {
  // First: a fenced worker no longer owns the job, even when it is also being preempted.
  if (error instanceof FencedError || (error as { code?: string })?.code === 'Fenced') return 'superseded'
  if (preempted || error instanceof PreemptedError) return 'preempted'
  if (error instanceof RecoverableError || isTransient(error)) return 'recoverable'
  return 'permanent'
}

/** BullMQ's error for "any other error": the job fails now. Keeps the original as `cause`. */
export function permanent(error: unknown): Error {
  const e = error as { name?: string; message?: string; code?: string } | undefined
  const what = e?.code ? `${e.name ?? 'Error'} [${e.code}]` : (e?.name ?? 'Error')
  const u = new bullmq.UnrecoverableError(`${what}: ${e?.message ?? String(error)}`)
  ;(u as Error).cause = error
  return u
}

// WaitingError and job.moveToWait arrived in BullMQ 5.x; older 5.x releases only have the delayed
// route, which also keeps the attempt budget (a delay of 0 makes the job ready at once).
const WaitingError = (bullmq as unknown as { WaitingError?: new (message?: string) => Error }).WaitingError

/**
 * Puts a preempted job back at the head of the wait list without counting a failed attempt
 * (`attemptsMade` is unchanged; `attemptsStarted` grows when it is picked up again), and returns
 * the error the processor must throw so that the worker leaves the job alone.
 */
export async function requeue(job: Job, token: string | undefined): Promise<{ error: Error; moved: boolean; why?: string }> {
  try {
    if (WaitingError && typeof (job as { moveToWait?: unknown }).moveToWait === 'function') {
      await runInIoScope(() => job.moveToWait(token))
      return { error: new WaitingError(), moved: true }
    }
    await runInIoScope(() => job.moveToDelayed(Date.now(), token))
    return { error: new bullmq.DelayedError(), moved: true }
  } catch (e) {
    // The lock is gone (the stalled checker gave the job to another worker): it is not ours to move.
    return { error: letGo(), moved: false, why: (e as Error).message }
  }
}

/**
 * The error that makes a worker drop a job without moving it: the worker treats Waiting/Delayed
 * errors as "the processor already moved the job" and fetches the next one. Used when another
 * worker owns the job now.
 */
export function letGo(): Error {
  return WaitingError ? new WaitingError() : new bullmq.DelayedError()
}
