import { AsyncLocalStorage } from 'node:async_hooks'
import type { Checkpointer } from '../checkpoint/checkpointer.js'
import { NoTaskContextError } from './errors.js'

export interface TaskLogger {
  info(message: string): void
  warn(message: string): void
  error(message: string): void
}

/** What code anywhere below a running task can reach through `currentContext()`. */
export interface TaskContext {
  readonly taskName: string
  readonly taskVersion: string | undefined
  /** 0-based, counted across processes when an engine reports its attempt number. */
  readonly attempt: number
  /** This attempt's checkpointer; it sees what earlier attempts committed. */
  readonly checkpoint: Checkpointer
  /** Aborted on timeout or preemption; pass it on to anything long-running. */
  readonly signal: AbortSignal
  readonly log: TaskLogger
  /** Registers work to do when preemption is announced (e.g. one last save). Returns an unsubscribe. */
  onPreempt(hook: (reason: string) => void | Promise<void>): () => void
}

const storage = new AsyncLocalStorage<TaskContext>()

/** The context of the task this code runs in. Throws a clear error outside a task. */
export function currentContext(): TaskContext {
  const ctx = storage.getStore()
  if (!ctx) throw new NoTaskContextError()
  return ctx
}

/** Like `currentContext()` but `undefined` outside a task. */
export function maybeContext(): TaskContext | undefined {
  return storage.getStore()
}

export function runInContext<T>(ctx: TaskContext, fn: () => T): T {
  return storage.run(ctx, fn)
}

export function consoleLogger(prefix: string): TaskLogger {
  return {
    info: (m) => console.error(`[${prefix}] ${m}`),
    warn: (m) => console.error(`[${prefix}] warning: ${m}`),
    error: (m) => console.error(`[${prefix}] error: ${m}`),
  }
}
