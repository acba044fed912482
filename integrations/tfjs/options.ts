import type { Checkpointer } from '../../src/checkpoint/checkpointer.js'

/** When to save. Default: at the end of every epoch. */
export type SaveEvery = 'epoch' | { epochs: number } | { batches: number }

/** Why a checkpoint was made: a scheduled epoch or batch save, or the last save before a preemption stop. */
export type SaveKind = 'epoch' | 'batch' | 'preempt'

export interface CheckpointCallbackOptions {
  /** Default: `currentContext().checkpoint` of the running task. */
  checkpoint?: Checkpointer
  every?: SaveEvery
  /** Wait for each save to be durable before training goes on. Default false: saves upload in the background. */
  sync?: boolean
  /** Must match the `shuffle` given to `fit` (tfjs's default is true). Ignored for fitDataset. */
  shuffle?: boolean
  /** Preemption: when aborted, one last save at the next batch boundary, then training stops. Default: the task's signal. */
  signal?: AbortSignal
  /** Extra metadata for each checkpoint (hyperparameters, run name...). */
  metadata?: Record<string, unknown>
  /** Called after each save is handed to the checkpointer. */
  onSave?: (e: { epoch: number; batch: number; kind: SaveKind; step: number }) => void
  /** Called once a checkpoint has been restored, before training goes on (epoch and batch are 0-based). */
  onResume?: (from: { epoch: number; batch: number; step: number }) => void
  /**
   * Awaited after every batch (resumed partial epochs included, unlike user callbacks given to
   * fit, which that remaining-slice fit does not run); throwing stops training with that error.
   */
  onBatch?: (e: { epoch: number; batch: number; step: number }) => void | Promise<void>
  /** Called at each epoch end with the epoch's mean logs (loss, metrics, val_*). */
  onEpoch?: (epoch: number, logs: Record<string, number>) => void
}

/** A scheduled save after `batch` batches of the epoch? Never on its last batch: the epoch end saves there. */
export function batchSaveDue(every: SaveEvery, batch: number, lastOfEpoch: boolean): boolean {
  return typeof every === 'object' && 'batches' in every && batch % every.batches === 0 && !lastOfEpoch
}

/** A scheduled save at the end of `epoch`? With batch-level saves, every epoch end is one: it is where the next epoch resumes. */
export function epochSaveDue(every: SaveEvery, epoch: number): boolean {
  const n = every === 'epoch' ? 1 : 'epochs' in every ? every.epochs : 0
  return n === 0 || (epoch + 1) % n === 0
}
