import type { Worker } from 'node:worker_threads'

// Why one at a time: starting a thread is ~20-40 ms of CPU (a Node environment of its own). The
// four that a writer's claim started together (hashing, file threads) took ~40 ms from a training
// loop running beside them on this 2-core machine, 5 % of a 0.75 s fit; started one at a time they
// took ~3 ms. So the threads a process starts ahead of need wait here for the one before to be
// online (its environment built, ~27 ms of CPU here). What a thread loads after that still overlaps
// the next start: the hashing threads' BLAKE3 module (~12 ms), the S3 upload thread's SDK (~77 ms).
// A thread needed at once (a job waiting for it) is started by its owner directly, not queued.

const queue: Array<() => Worker | undefined> = []
let starting = false

/**
 * Calls `start` once the threads queued before it are running. `start` starts one thread and
 * returns it, or returns undefined when it is no longer needed (its owner started it on demand
 * meanwhile, or stopped). A `start` that throws is skipped: its owner records why.
 */
export function startInTurn(start: () => Worker | undefined): void {
  queue.push(start)
  if (!starting) next()
}

/**
 * Queues starts until `running()` threads run: each, when its turn comes, starts one more unless
 * `size` run by then. `startOne` may return undefined when no thread is wanted any more.
 */
export function startUpTo(size: number, running: () => number, startOne: () => Worker | undefined): void {
  for (let i = running(); i < size; i++) startInTurn(() => (running() < size ? startOne() : undefined))
}

function next(): void {
  starting = false
  while (queue.length > 0) {
    let w: Worker | undefined
    try {
      w = queue.shift()!()
    } catch {
      w = undefined
    }
    if (!w) continue
    starting = true
    // 'online', not a message: a 'message' listener would hold the process open (see HashPool.start).
    const up = (): void => {
      w.off('online', up)
      w.off('error', up)
      w.off('exit', up)
      next()
    }
    w.once('online', up)
    w.once('error', up)
    w.once('exit', up)
    return
  }
}
