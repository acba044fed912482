import { openStorage } from '../storage/resolve.js'
import { MAX_TIMER_MS, isTimerMs } from '../timer-range.js'
import { detectEngine, type EngineInfo } from './engines/detect.js'
import { ErrorKind, ErrorOrigin, encodeErrorDocument } from './engines/flyte.js'
import { PreemptedError, RecoverableError, TaskConfigError } from './errors.js'
import { PreemptionWatcher, type PreemptionOptions } from './preemption.js'
import { task as makeTask, type Task, type TaskOptions } from './task.js'

/** The process exit contract. Engines retry on `preempted` and `recoverable`, stop on the rest. */
export interface ExitCodes {
  /** The task finished. Default 0. */
  success: number
  /** Stopped by SIGTERM or a preemption notice after saving. Default 143 (128 + SIGTERM). */
  preempted: number
  /** A RecoverableError (or timeout) outlived the in-process retries. Default 75 (EX_TEMPFAIL). */
  recoverable: number
  /** Any other error: retrying will not help. Default 1. */
  permanent: number
}

export const DEFAULT_EXIT_CODES: ExitCodes = { success: 0, preempted: 143, recoverable: 75, permanent: 1 }

export interface MainOptions {
  exitCodes?: Partial<ExitCodes>
  /** Default: SIGTERM/SIGINT, plus the cloud notices enabled by TASKPOINT_WATCH_AWS_SPOT / _GCE / _AZURE. */
  preemption?: PreemptionOptions
  /** After preemption, how long the final save and flush may take before the process exits anyway. Default 25 s. */
  graceMs?: number
  /** Called with the task's output on success (default: print it as JSON when it is not undefined). */
  onResult?: (output: unknown) => void | Promise<void>
  /** Read from argv/env by default. */
  engine?: EngineInfo
  /** Exit the process (default true). False returns the code instead, for tests and embedding. */
  exit?: boolean
}

export type Outcome = 'success' | 'preempted' | 'recoverable' | 'permanent'

/** Maps how a task ended to its outcome in the exit contract. */
export function classify(error: unknown, preempted: boolean): Outcome {
  if (error === undefined) return 'success'
  if (preempted || error instanceof PreemptedError) return 'preempted'
  if (error instanceof RecoverableError) return 'recoverable'
  return 'permanent'
}

/**
 * Runs a task as the process's main job: reads the engine's checkpoint locations and attempt
 * number, watches for preemption, and exits with the status the engine needs (on Flyte: writes
 * error.pb and exits 0, as flytekit does).
 */
export async function runMain<I, O>(t: Task<I, O>, inputs: I, options: MainOptions = {}): Promise<number> {
  const codes = { ...DEFAULT_EXIT_CODES, ...options.exitCodes }
  const engine = options.engine ?? detectEngine()
  const graceMs = options.graceMs ?? 25_000
  // A timer takes at most MAX_TIMER_MS; a longer grace (or Infinity) would end after 1 ms.
  if (!isTimerMs(graceMs)) throw new TaskConfigError(`runMain: graceMs must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${graceMs}`)
  const watcher = new PreemptionWatcher(options.preemption ?? preemptionFromEnv()).start()
  const o: TaskOptions = { ...t.options, preemption: watcher }
  if (engine.checkpoint && !t.options.checkpoint) o.checkpoint = engine.checkpoint
  if (engine.previousCheckpoint && !t.options.previousCheckpoint) o.previousCheckpoint = engine.previousCheckpoint
  o.attemptOffset = (t.options.attemptOffset ?? 0) + engine.attempt
  // The same function, with the engine's view of where and which attempt this is.
  const run = makeTask(o, t.fn)

  let error: unknown
  let output: unknown
  let graceTimer: NodeJS.Timeout | undefined
  const forced = new Promise<'forced'>((resolve) => {
    watcher.signal.addEventListener('abort', () => {
      graceTimer = setTimeout(() => resolve('forced'), graceMs)
      graceTimer.unref()
    })
  })
  try {
    const r = await Promise.race([run(inputs).then((v) => ({ v })), forced])
    if (r === 'forced') {
      error = new PreemptedError(`${watcher.preempted}; the task did not stop within the ${graceMs} ms grace period`)
      console.error(`[taskpoint] ${(error as Error).message}: exiting with what was saved`)
    } else output = r.v
  } catch (e) {
    error = e
  } finally {
    clearTimeout(graceTimer)
    watcher.stop()
  }
  const outcome = classify(error, watcher.preempted !== undefined)
  if (outcome === 'success') {
    await (options.onResult ?? ((v: unknown) => v !== undefined && console.log(JSON.stringify(v))))(output)
  } else {
    console.error(`[taskpoint] task ${t.options.name} ended (${outcome}, exit ${codes[outcome]}): ${(error as Error)?.message ?? error}`)
  }

  let code = codes[outcome]
  if (engine.engine === 'flyte' && outcome !== 'success' && engine.outputPrefix) {
    await writeFlyteError(engine.outputPrefix, outcome, error)
    code = 0 // Flyte reads error.pb only when the container succeeded
  }
  if (options.exit !== false) process.exit(code)
  return code
}

/** TASKPOINT_WATCH_AWS_SPOT / _GCE / _AZURE = 1 turn the metadata watchers on without code changes. */
export function preemptionFromEnv(env: NodeJS.ProcessEnv = process.env): PreemptionOptions {
  const on = (v: string | undefined): boolean => v === '1' || v === 'true'
  return { aws: on(env.TASKPOINT_WATCH_AWS_SPOT), gce: on(env.TASKPOINT_WATCH_GCE), azure: on(env.TASKPOINT_WATCH_AZURE) }
}

async function writeFlyteError(outputPrefix: string, outcome: Outcome, error: unknown): Promise<void> {
  const doc = encodeErrorDocument({
    code: outcome === 'preempted' ? 'Preempted' : outcome === 'recoverable' ? 'RecoverableError' : ((error as { code?: string })?.code ?? 'Error'),
    message: String((error as Error)?.stack ?? error),
    kind: outcome === 'permanent' ? ErrorKind.NON_RECOVERABLE : ErrorKind.RECOVERABLE,
    origin: outcome === 'preempted' ? ErrorOrigin.SYSTEM : ErrorOrigin.USER,
    timestamp: new Date(),
  })
  const storage = await openStorage(outputPrefix)
  try {
    await storage.put('error.pb', doc)
  } finally {
    await storage.close()
  }
}
