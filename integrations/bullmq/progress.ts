import type { Job } from 'bullmq'
import { runInIoScope } from '../../src/io-scope.js'
import type { CheckpointProgress } from '../../src/checkpoint/types.js'
import type { TaskLogger } from '../../src/runtime/context.js'

/** What the integration puts in `job.progress` (merged with whatever the handler reports). */
export interface FleetProgress {
  /** The highest step reported by the handler or seen in a checkpoint. */
  step?: number
  /** The checkpoint transfer in progress or last finished: restore at start, upload after a save. */
  checkpoint?: { phase: 'upload' | 'download'; step?: number; loaded: number; total: number }
  [key: string]: unknown
}

/**
 * Sends progress to `job.updateProgress` with at most one call in flight; a newer value replaces
 * one still waiting (a chunk-by-chunk upload must not queue hundreds of Redis writes), and a
 * failed update is reported once, never thrown into the job.
 */
export class ProgressReporter {
  private value: FleetProgress = {}
  private dirty = false
  private sending: Promise<void> | undefined
  private warned = false

  constructor(
    private readonly job: Job,
    private readonly log: TaskLogger,
  ) {}

  set(patch: FleetProgress): void {
    const step = Math.max(this.value.step ?? -1, patch.step ?? -1, patch.checkpoint?.step ?? -1)
    this.value = { ...this.value, ...patch, ...(step >= 0 ? { step } : {}) }
    this.dirty = true
    this.sending ??= this.drain()
  }

  fromCheckpoint(p: CheckpointProgress): void {
    this.set({ checkpoint: { phase: p.phase, loaded: p.loaded, total: p.total, ...(p.step !== undefined ? { step: p.step } : {}) } })
  }

  /** Resolves once the newest value has been sent (or failed). */
  async flush(): Promise<void> {
    while (this.sending) await this.sending
  }

  private async drain(): Promise<void> {
    try {
      while (this.dirty) {
        this.dirty = false
        // Redis clients draw on Math.random in places; keep them off a seeded training stream.
        await runInIoScope(() => this.job.updateProgress({ ...this.value })).catch((e: Error) => {
          if (!this.warned) this.log.warn(`job ${this.job.id}: could not update progress (${e.message}); the job goes on`)
          this.warned = true
        })
      }
    } finally {
      this.sending = undefined
    }
  }
}
