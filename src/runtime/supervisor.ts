import { setTimeout as delay } from 'node:timers/promises'
import { ConfigError } from '../errors.js'
import { MAX_TIMER_MS, isTimerMs } from '../timer-range.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { DEFAULT_EXIT_CODES } from './main.js'

export interface SuperviseOptions {
  command: string
  args?: string[]
  /** Reruns after a retryable exit: 0..10. Default 3. */
  retries?: number
  /** Passed to the child as TASKPOINT_CHECKPOINT. */
  checkpoint?: string
  /** Exit codes that mean "run me again". Default 75 and 143. */
  retryOn?: number[]
  /** Also rerun a child killed by a signal (SIGKILL: the machine vanished). Default true. */
  retryOnSignal?: boolean
  /** Pause between attempts in ms. Default 500. */
  delayMs?: number
  env?: NodeJS.ProcessEnv
  /** Progress lines (attempt started, ended, retrying). Default: stderr. */
  log?: (line: string) => void
  /** 'inherit' (default) shares this process's stdio; 'pipe' lets `onSpawn` read the attempt's output. */
  stdio?: 'inherit' | 'pipe'
  /** Called with each attempt's process as it starts (to watch its output, or to preempt it in a simulation). */
  onSpawn?: (child: ChildProcess, attempt: number) => void
}

/**
 * The local engine: runs a command, reruns it on the retry statuses with TASKPOINT_ATTEMPT and
 * TASKPOINT_CHECKPOINT set, passes SIGTERM/SIGINT to the attempt's whole process group, and stops on success or a permanent
 * failure. Resolves with the exit code to exit with.
 */
export async function supervise(o: SuperviseOptions): Promise<number> {
  const retries = o.retries ?? 3
  if (!Number.isInteger(retries) || retries < 0 || retries > 10) throw new ConfigError(`retries must be a whole number from 0 to 10, got ${o.retries}`)
  const delayMs = o.delayMs ?? 500
  // A timer takes at most MAX_TIMER_MS; a longer delay would be over after 1 ms.
  if (!isTimerMs(delayMs)) throw new ConfigError(`delayMs must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${o.delayMs}`)
  const retryOn = new Set(o.retryOn ?? [DEFAULT_EXIT_CODES.recoverable, DEFAULT_EXIT_CODES.preempted])
  const log = o.log ?? ((l: string) => console.error(l))
  let stopping: NodeJS.Signals | undefined
  let child: ReturnType<typeof spawn> | undefined
  const forward = (sig: NodeJS.Signals) => () => {
    // We are being stopped ourselves: pass it on and do not start another attempt.
    stopping = sig
    if (child) signalGroup(child, sig)
  }
  const onTerm = forward('SIGTERM')
  const onInt = forward('SIGINT')
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  try {
    for (let attempt = 0; ; attempt++) {
      const env: NodeJS.ProcessEnv = { ...process.env, ...o.env, TASKPOINT_ATTEMPT: String(attempt) }
      if (o.checkpoint) env.TASKPOINT_CHECKPOINT = o.checkpoint
      const started = Date.now()
      // Each attempt leads a process group of its own, and signals go to the whole group: with a
      // wrapper in between (`npx tsx train.ts`, `sh -c ...`, `npm start`) that does not pass
      // SIGTERM on, the trainer itself still gets it, saves and exits, instead of living on
      // re-parented after its wrapper died.
      const c = spawn(o.command, o.args ?? [], { stdio: o.stdio === 'pipe' ? ['ignore', 'pipe', 'pipe'] : 'inherit', env, detached: process.platform !== 'win32' })
      child = c
      o.onSpawn?.(c, attempt)
      const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
        c.once('error', (error) => resolve({ code: null, signal: null, error }))
        c.once('exit', (code, signal) => resolve({ code, signal }))
      })
      child = undefined
      if (result.error) {
        log(`taskpoint run: cannot start ${o.command}: ${result.error.message}`)
        return 127
      }
      const secs = ((Date.now() - started) / 1000).toFixed(1)
      const how = result.signal ? `killed by ${result.signal}` : `exit ${result.code}`
      log(`taskpoint run: attempt ${attempt} (pid ${c.pid}) ended after ${secs}s: ${how}`)
      if (stopping) return result.code ?? 128 + 15
      if (result.code === 0) return 0
      const retryable = result.signal ? (o.retryOnSignal ?? true) : retryOn.has(result.code ?? -1)
      if (!retryable) {
        log(`taskpoint run: exit ${result.code} is permanent; not retrying`)
        return result.code ?? 1
      }
      if (attempt >= retries) {
        log(`taskpoint run: no retries left (${retries})`)
        return result.code ?? 128 + 9
      }
      log(`taskpoint run: retrying (${attempt + 1} of ${retries})`)
      await delay(delayMs)
    }
  } finally {
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
  }
}

/** Sends `sig` to the attempt's process group (the child and everything it started), or to the child alone where there are no groups. */
function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return
  try {
    if (process.platform !== 'win32') return void process.kill(-child.pid, sig)
  } catch {
    // the group is gone already (or never formed): fall back to the child itself
  }
  child.kill(sig)
}
