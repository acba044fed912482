import { ConfigError, TaskpointError } from '../errors.js'

/**
 * Throw this (or a subclass) from task code for a failure that a retry may cure: a flaky data
 * source, a lost worker, a NaN you want to retry from the last checkpoint. Any other error fails
 * the task at once (Flyte's rule for `FlyteRecoverableException`).
 */
export class RecoverableError extends TaskpointError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Recoverable', message, options)
  }
}

/** An attempt ran past its timeout. Recoverable: the next attempt resumes from the checkpoint. */
export class TaskTimeoutError extends RecoverableError {
  constructor(
    readonly task: string,
    readonly timeoutMs: number,
    readonly attempt: number,
  ) {
    super(`task ${task} attempt ${attempt} timed out after ${formatMs(timeoutMs)}`)
  }
}

/**
 * The machine is being taken away (SIGTERM, a spot/preemption notice). Not retried in this
 * process: the process saves, exits with the preemption status, and the engine starts it again.
 */
export class PreemptedError extends RecoverableError {
  constructor(readonly reason: string) {
    super(`preempted: ${reason}`)
  }
}

/** A task option or cached-task input the caller must change (the shared ConfigError, code `TaskConfig`). */
export class TaskConfigError extends ConfigError {
  constructor(message: string) {
    super(message, 'TaskConfig')
  }
}

export class NoTaskContextError extends TaskpointError {
  constructor() {
    super('NoTaskContext', 'currentContext() was called outside a task: call it from code that runs inside task(...)(inputs), or pass the Checkpointer explicitly')
  }
}

export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}

/** `90`, `'90ms'`, `'30s'`, `'15m'`, `'2h'`, `'1h30m'` → milliseconds. */
export function parseDuration(d: number | string): number {
  if (typeof d === 'number') {
    if (!Number.isFinite(d) || d <= 0) throw new TaskConfigError(`duration must be a positive number of ms, got ${d}`)
    return d
  }
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g
  let total = 0
  let consumed = 0
  for (const m of d.trim().matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms']
    consumed += m[0].length
  }
  if (consumed === 0 || consumed !== d.trim().length || total <= 0) {
    throw new TaskConfigError(`cannot read duration "${d}": use e.g. "90s", "15m", "2h", "1h30m" or a number of ms`)
  }
  return total
}
