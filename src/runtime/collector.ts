import type { Checkpointer } from '../checkpoint/checkpointer.js'
import { collectGarbage } from '../checkpoint/gc.js'
import type { LockOptions } from '../checkpoint/locks.js'
import type { TaskLogger } from './context.js'

export interface CollectorOptions {
  everyMs: number
  minAgeMs?: number
  locks?: LockOptions
  log: TaskLogger
}

/**
 * Collects the chunks of checkpoints that retention deleted, in the background, every `everyMs`.
 *
 * Why not after every commit (the Checkpointer's own way): collection holds the store's exclusive
 * lock, and a process killed while holding it, or while committing, makes the next collector or
 * writer wait for the lock to go stale. A training loop that saves every few seconds and is killed
 * at random instants would hit that often; collecting every few minutes makes it rare, and loses
 * nothing, since chunks younger than `gc.minAgeMs` (15 min) are never collected anyway.
 */
export function startCollector(cp: Checkpointer, o: CollectorOptions): { stop(): Promise<void> } {
  let running: Promise<void> | undefined
  const run = (): void => {
    if (running) return
    running = collectGarbage(cp.storage, { owner: cp.writerId, ...(o.minAgeMs !== undefined ? { minAgeMs: o.minAgeMs } : {}), ...(o.locks ? { locks: o.locks } : {}) })
      .then((r) => {
        if (r.skipped && r.blockedBy.length > 0) o.log.warn(`garbage collection skipped: ${r.skipped}`)
      })
      .catch((e: unknown) => o.log.warn(`garbage collection failed (tried again in ${Math.round(o.everyMs / 1000)} s): ${(e as Error).message}`))
      .finally(() => (running = undefined))
  }
  const timer = setInterval(run, o.everyMs)
  timer.unref()
  return {
    // A collection under way is finished, not cut off: its lock must not outlive it.
    async stop() {
      clearInterval(timer)
      await running
    },
  }
}
