import { setImmediate as nextTurn } from 'node:timers/promises'
import { copyInto, snapshotSize, type BufferPool, type Snapshot } from './snapshot.js'

/**
 * The order of commits of one Checkpointer: jobs run one after another, in the order they were
 * asked for, and background snapshots are coalesced (a newer one replaces one still waiting, so
 * at most one waits while one commits: two buffers in all). Errors of background commits are kept
 * and thrown once, by whoever asks next.
 */
export class CommitQueue {
  private tail: Promise<unknown> = Promise.resolve()
  /** The newest background snapshot not yet taken by a commit. */
  private pending: Snapshot | undefined
  private bgError: unknown
  /** Jobs queued or running. */
  private jobs = 0

  constructor(private readonly pool: BufferPool) {}

  /** Whether a job is queued or running. */
  get busy(): boolean {
    return this.jobs > 0
  }

  /** Runs `job` after every job asked for before it. */
  serially<T>(job: () => Promise<T>): Promise<T> {
    this.jobs++
    const run = this.tail.then(job).finally(() => this.jobs--)
    this.tail = run.catch(() => {})
    return run
  }

  /**
   * Copies `described` into a pooled buffer now and commits it in the background with `commit`,
   * unless a newer snapshot replaces it before its turn comes.
   */
  offer(described: Snapshot, commit: (snap: Snapshot) => Promise<unknown>): void {
    const replaced = this.pending
    this.pending = undefined
    // The waiting snapshot's buffer goes back first, so the new copy can reuse it.
    this.pool.give(replaced?.buffer)
    copyInto(described, this.pool.take(snapshotSize(described)))
    this.pending = described
    if (replaced) return // a job for the waiting snapshot is already queued; it takes this one
    void this.serially(async () => {
      // Let the caller's synchronous code go on before any hashing starts.
      await nextTurn()
      const snap = this.pending
      this.pending = undefined
      if (!snap) return
      try {
        await commit(snap)
      } catch (e) {
        this.bgError ??= e
      } finally {
        this.pool.give(snap.buffer)
      }
    })
  }

  /** Waits until no job is queued or running (jobs queued meanwhile included). */
  async drain(): Promise<void> {
    for (let t = this.tail; ; t = this.tail) {
      await t.catch(() => {})
      if (t === this.tail) break
    }
  }

  /** Throws the first background error, once. */
  throwBackgroundError(): void {
    if (this.bgError !== undefined) {
      const e = this.bgError
      this.bgError = undefined
      throw e
    }
  }
}
