import { randomInt } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { Checkpointer, type CheckpointerOptions } from '../checkpoint/checkpointer.js'
import { latest, type RetentionPolicy } from '../checkpoint/retention.js'
import { isTransient } from '../errors.js'
import { openStorage } from '../storage/resolve.js'
import { MAX_TIMER_MS, isTimerMs } from '../timer-range.js'
import { cacheKey, readCache, writeCache } from './cache.js'
import { startCollector } from './collector.js'
import { consoleLogger, runInContext, type TaskContext, type TaskLogger } from './context.js'
import { PreemptedError, RecoverableError, TaskConfigError, TaskTimeoutError, parseDuration } from './errors.js'
import { PreemptionWatcher } from './preemption.js'

/** Retention of the checkpointer a task opens, unless `checkpointOptions.keep` says otherwise. */
export const DEFAULT_TASK_KEEP: RetentionPolicy = latest(3)

export const DEFAULT_TASK_GC_EVERY_MS = 10 * 60_000

export const DEFAULT_RETRY_DELAY = { minMs: 1000, maxMs: 30_000 } as const

export interface TaskOptions {
  name: string
  /** Recorded in the context and in cache keys' logs. */
  version?: string
  /** Retries after a RecoverableError (or a timeout): 0..10. Default 0. Other errors are never retried. */
  retries?: number
  /**
   * Retries after a storage fault that escaped the per-operation retries (the store was down for
   * longer than their backoff). Counted apart from `retries`. Default 3.
   */
  systemRetries?: number
  /** Per attempt, e.g. '2h', '30m', 90_000. Applied to every retry. Default: none. */
  timeout?: string | number
  /** Where this task's checkpoints live. Default: the engine's location (TASKPOINT_CHECKPOINT, Flyte's --checkpoint-path). */
  checkpoint?: string
  /** A previous attempt's checkpoint under another prefix (Flyte's prevCheckpointPrefix): copied forward at start when ours is empty. */
  previousCheckpoint?: string
  /**
   * Options of the attempt's Checkpointer. `keep` (retention) defaults to `latest(3)` here — the
   * three newest checkpoints survive each commit, so a long run does not fill the store — rather
   * than the Checkpointer's keep-all; pass `keep: keepAll` or any policy to change it. The chunks
   * of deleted checkpoints are collected in the background every `gcEveryMs`, not after each
   * commit (unless `gc.enabled` is set to true).
   */
  checkpointOptions?: CheckpointerOptions
  /** How often the attempt collects unreferenced chunks in the background. Default 10 minutes; 0 never. */
  gcEveryMs?: number
  /** Memoize: same name, version and inputs return the stored output without running. */
  cache?: { version: string /** Where outputs are stored (under `cache/`). Default: the checkpoint location. */; store?: string }
  /**
   * Pause before each retry: `minMs`·2^n, jittered up to twice that, capped at `maxMs`.
   * Default `{ minMs: 1000, maxMs: 30_000 }` (1–2 s, then 2–4 s, ...), which gives a flaky data
   * source time to recover; use e.g. `{ minMs: 100, maxMs: 1000 }` for failures that pass at once.
   */
  retryDelay?: { minMs?: number; maxMs?: number }
  /** After a timeout aborts an attempt, how long to wait for it to stop before abandoning it. Default 5 s. */
  abandonAfterMs?: number
  /** Attempts already made by earlier processes (an engine's attempt number). Default 0. */
  attemptOffset?: number
  /** A started watcher whose preemption aborts the running attempt. */
  preemption?: PreemptionWatcher
  logger?: TaskLogger
}

export interface Task<I, O> {
  (inputs: I): Promise<O>
  readonly options: Readonly<TaskOptions>
  /** The wrapped function, for runners that rebuild the task with engine-provided options. */
  readonly fn: (inputs: I) => Promise<O> | O
}

/**
 * Wraps a function as a task: each attempt runs with a fresh `currentContext()` (checkpoint,
 * attempt, abort signal, logger); RecoverableErrors and timeouts are retried within `retries`;
 * any other error fails at once.
 */
export function task<I, O>(options: TaskOptions, fn: (inputs: I) => Promise<O> | O): Task<I, O> {
  validate(options)
  const run = async (inputs: I): Promise<O> => runTask(options, fn, inputs)
  return Object.assign(run, { options: Object.freeze({ ...options }), fn })
}

function validate(o: TaskOptions): void {
  if (!o || typeof o.name !== 'string' || o.name.trim() === '') throw new TaskConfigError('task({ name }) needs a non-empty name')
  const r = o.retries ?? 0
  if (!Number.isInteger(r) || r < 0 || r > 10) throw new TaskConfigError(`task ${o.name}: retries must be a whole number from 0 to 10, got ${o.retries}`)
  const sr = o.systemRetries ?? 3
  if (!Number.isInteger(sr) || sr < 0 || sr > 10) throw new TaskConfigError(`task ${o.name}: systemRetries must be a whole number from 0 to 10, got ${o.systemRetries}`)
  // Timers take at most MAX_TIMER_MS (24.8 days); a longer one fires after 1 ms instead.
  const timer = (what: string, ms: number | undefined): void => {
    if (ms !== undefined && !isTimerMs(ms)) {
      throw new TaskConfigError(`task ${o.name}: ${what} must be a number of ms from 0 to ${MAX_TIMER_MS} (24.8 days), got ${ms}`)
    }
  }
  if (o.timeout !== undefined) timer('timeout', parseDuration(o.timeout))
  for (const k of ['minMs', 'maxMs'] as const) timer(`retryDelay.${k}`, o.retryDelay?.[k])
  timer('gcEveryMs', o.gcEveryMs)
  if (o.cache && (typeof o.cache.version !== 'string' || o.cache.version === ''))
    throw new TaskConfigError(`task ${o.name}: cache needs a version string, e.g. cache: { version: '1.0' }`)
  if (o.preemption !== undefined && !(o.preemption instanceof PreemptionWatcher))
    throw new TaskConfigError(`task ${o.name}: preemption must be a started PreemptionWatcher (new PreemptionWatcher().start()), or left out; runMain() makes one`)
  if (o.logger !== undefined && !(o.logger && ['info', 'warn', 'error'].every((k) => typeof (o.logger as unknown as Record<string, unknown>)[k] === 'function')))
    throw new TaskConfigError(`task ${o.name}: logger must have info, warn and error methods (console has them)`)
  // Recorded in every manifest as the attempt number: one out of range would make checkpoints no reader accepts.
  if (o.attemptOffset !== undefined && !(Number.isSafeInteger(o.attemptOffset) && o.attemptOffset >= 0))
    throw new TaskConfigError(`task ${o.name}: attemptOffset must be a whole number >= 0, got ${o.attemptOffset}`)
}

/** A storage fault that outlived its retries: the system's fault, not the task's. */
function isSystemFault(e: unknown): boolean {
  return isTransient(e)
}

async function runTask<I, O>(o: TaskOptions, fn: (inputs: I) => Promise<O> | O, inputs: I): Promise<O> {
  const log = o.logger ?? consoleLogger(`taskpoint:${o.name}`)
  const uri = o.checkpoint ?? process.env.TASKPOINT_CHECKPOINT
  if (!uri) throw new TaskConfigError(`task ${o.name}: no checkpoint location: pass task({ checkpoint: 's3://…' }) or set TASKPOINT_CHECKPOINT`)
  const timeoutMs = o.timeout !== undefined ? parseDuration(o.timeout) : undefined

  let cache: { storage: Awaited<ReturnType<typeof openStorage>>; key: string } | undefined
  if (o.cache) {
    const storage = await openStorage(o.cache.store ?? uri, o.checkpointOptions?.storage)
    cache = { storage, key: cacheKey(o.name, o.cache.version, inputs) }
    const hit = await readCache(storage, cache.key)
    if (hit.hit) {
      log.info(`cache hit (${o.cache.version}): returning the stored output without running`)
      await storage.close()
      return hit.output as O
    }
  }

  const userBudget = o.retries ?? 0
  const systemBudget = o.systemRetries ?? 3
  let userUsed = 0
  let systemUsed = 0
  try {
    for (let attempt = o.attemptOffset ?? 0, retry = 0; ; attempt++) {
      try {
        const output = await runAttempt(o, fn, inputs, { uri, attempt, timeoutMs, log })
        if (cache) await writeCache(cache.storage, cache.key, output)
        return output
      } catch (error) {
        const message = (error as Error)?.message ?? String(error)
        // Preemption is not retried here: the machine is going away; the engine restarts us.
        if (error instanceof PreemptedError || o.preemption?.preempted) {
          log.info(`attempt ${attempt} stopped: ${message}`)
          throw error
        }
        let budget: string
        if (error instanceof RecoverableError && userUsed < userBudget) budget = `retry ${++userUsed} of ${userBudget}`
        else if (isSystemFault(error) && systemUsed < systemBudget) budget = `storage retry ${++systemUsed} of ${systemBudget}`
        else {
          const why = error instanceof RecoverableError || isSystemFault(error) ? 'no retries left' : 'not retried: only RecoverableError and timeouts are'
          log.warn(`attempt ${attempt} failed (${why}): ${message}`)
          throw error
        }
        const wait = retryDelayMs(o.retryDelay, retry++)
        log.warn(`attempt ${attempt} failed: ${message}; retrying in ${formatDelay(wait)} (${budget})`)
        // A referenced timer: the wait is the process's only work now, it must keep it alive.
        await delay(wait)
      }
    }
  } finally {
    await cache?.storage.close()
  }
}

/**
 * Exponential backoff with jitter: min·2^n, times a random factor in [1, 2), capped at max. The
 * jitter comes from node:crypto, never Math.random, which a training loop may have seeded.
 */
export function retryDelayMs(o: TaskOptions['retryDelay'], retry: number): number {
  const min = o?.minMs ?? DEFAULT_RETRY_DELAY.minMs
  const max = Math.max(min, o?.maxMs ?? DEFAULT_RETRY_DELAY.maxMs)
  return Math.round(Math.min(max, min * 2 ** Math.min(retry, 40) * (1 + randomInt(1_000_000) / 1_000_000)))
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`
}

async function runAttempt<I, O>(
  o: TaskOptions,
  fn: (inputs: I) => Promise<O> | O,
  inputs: I,
  a: { uri: string; attempt: number; timeoutMs: number | undefined; log: TaskLogger },
): Promise<O> {
  if (o.preemption?.preempted) throw new PreemptedError(o.preemption.preempted)
  const gc = o.checkpointOptions?.gc
  const cp = await Checkpointer.open(a.uri, {
    ...o.checkpointOptions,
    keep: o.checkpointOptions?.keep ?? DEFAULT_TASK_KEEP,
    // Collection runs on a timer instead (see collector.ts), unless asked for after every commit.
    gc: { ...gc, enabled: gc?.enabled === true },
    attempt: a.attempt,
  })
  // Claim at once: an earlier attempt still running (abandoned after a timeout) is fenced from now on.
  await cp.claim()
  if (o.previousCheckpoint && !cp.prevExists()) {
    const prev = await Checkpointer.open(o.previousCheckpoint, { ...o.checkpointOptions })
    try {
      const copied = await cp.copyLatestFrom(prev)
      if (copied) a.log.info(`copied the previous attempt's checkpoint (step ${copied.step}) forward from ${o.previousCheckpoint}`)
    } finally {
      await prev.close()
    }
  }
  const gcEveryMs = o.gcEveryMs ?? DEFAULT_TASK_GC_EVERY_MS
  const collector =
    gcEveryMs > 0 && gc?.enabled !== true && gc?.enabled !== false
      ? startCollector(cp, {
          everyMs: gcEveryMs,
          ...(gc?.minAgeMs !== undefined ? { minAgeMs: gc.minAgeMs } : {}),
          ...(o.checkpointOptions?.locks ? { locks: o.checkpointOptions.locks } : {}),
          log: a.log,
        })
      : undefined
  const controller = new AbortController()
  const unhooks: (() => void)[] = []
  const onPreemptAbort = (): void => controller.abort(o.preemption!.signal.reason)
  if (o.preemption) {
    if (o.preemption.signal.aborted) onPreemptAbort()
    else o.preemption.signal.addEventListener('abort', onPreemptAbort, { once: true })
  }
  const ctx: TaskContext = {
    taskName: o.name,
    taskVersion: o.version,
    attempt: a.attempt,
    checkpoint: cp,
    signal: controller.signal,
    log: a.log,
    onPreempt: (hook) => {
      const off = o.preemption?.onPreempt(hook) ?? (() => {})
      unhooks.push(off)
      return off
    },
  }

  let abandoned = false
  let timer: NodeJS.Timeout | undefined
  const work = Promise.resolve()
    .then(() => runInContext(ctx, () => fn(inputs)))
    .then((out) => {
      // A loop stopped by preemption returns early; its output is not the task's output.
      if (o.preemption?.preempted) throw new PreemptedError(o.preemption.preempted)
      return out
    })
  try {
    if (a.timeoutMs === undefined) return await work
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TaskTimeoutError(o.name, a.timeoutMs!, a.attempt)), a.timeoutMs)
    })
    try {
      return await Promise.race([work, timedOut])
    } catch (e) {
      if (e instanceof TaskTimeoutError) {
        controller.abort(e)
        // Give the attempt a moment to notice its signal; past that it is abandoned. Its
        // checkpointer is fenced by the next attempt's, so a zombie cannot interleave commits.
        const settled = await Promise.race([
          work.then(
            () => true,
            () => true,
          ),
          sleep(o.abandonAfterMs ?? 5000).then(() => false),
        ])
        if (!settled) {
          abandoned = true
          a.log.warn(`attempt ${a.attempt} ignored its abort signal after the timeout and was abandoned`)
        }
      }
      throw e
    }
  } finally {
    clearTimeout(timer)
    o.preemption?.signal.removeEventListener('abort', onPreemptAbort)
    // The final save a preemption hook started must land before the checkpointer closes.
    if (o.preemption?.preempted) await o.preemption.settled()
    for (const off of unhooks) off()
    await collector?.stop()
    if (!abandoned) await cp.close()
  }
}

/** A backoff that does not keep the process alive on its own. */
function sleep(ms: number): Promise<void> {
  return delay(ms, undefined, { ref: false })
}
