import type { Checkpointer } from '../../src/checkpoint/checkpointer.js'
import { ConfigError } from '../../src/errors.js'
import type { Restored } from './run.js'

/**
 * When to save. `'epoch'`: at every epoch end; `{ epochs: n }`: at the end of every n-th epoch;
 * `{ batches: n }`: after every n-th batch of the run (counted across epochs and resumes) and when
 * training ends (its last epoch, or stopped early).
 */
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
  /**
   * `createCheckpointCallback` only: what `resume()` returned, so that steps, history and the save
   * schedule go on from it (the fit wrappers resume by themselves). Your fit restarts the saved
   * epoch from its start (`initialEpoch`), whatever batch the checkpoint was saved at.
   */
  from?: Restored
}

/**
 * Checks the options a run is built from. A schedule that none of the checks below recognise would
 * save nothing at all (`'batch'`, `{ batch: 2 }`, `3` and `{ epochs: 0 }` each made no checkpoint in
 * a whole fit), and a `from` that is not what `resume()` returned failed deep inside.
 */
export function checkCallbackOptions(options: CheckpointCallbackOptions): void {
  const every: unknown = options.every
  // Keys given as undefined count as left out.
  const count = (o: object, k: string): boolean => {
    const set = Object.entries(o).filter(([, v]) => v !== undefined)
    return set.length === 1 && set[0]![0] === k && Number.isSafeInteger(set[0]![1]) && (set[0]![1] as number) >= 1
  }
  const ok = every === undefined || every === 'epoch' || (typeof every === 'object' && every !== null && (count(every, 'epochs') || count(every, 'batches')))
  if (!ok) {
    const shown = typeof every === 'string' ? JSON.stringify(every) : typeof every === 'object' ? JSON.stringify(every) : String(every)
    throw new ConfigError(`every must be 'epoch', { epochs: n } or { batches: n } with n a whole number >= 1, got ${shown}`)
  }
  const from = options.from as { saved?: { batch?: unknown; epoch?: unknown }; arrays?: unknown } | undefined
  if (
    from !== undefined &&
    (from === null || typeof from !== 'object' || typeof from.saved?.batch !== 'number' || typeof from.saved?.epoch !== 'number' || typeof from.arrays !== 'object')
  ) {
    throw new ConfigError('from must be what resume() returned (or leave it out to start from scratch)')
  }
}

/**
 * A scheduled save after the run's `step`-th batch? `{ batches: n }` saves after every n-th batch of
 * the whole run, counted across epochs and resumes (Keras' integer `save_freq` counts the same way),
 * except on an epoch's last batch: that save waits for the epoch end, where the position is the
 * next epoch's start.
 */
export function batchSaveDue(every: SaveEvery, step: number, lastOfEpoch: boolean): boolean {
  return typeof every === 'object' && 'batches' in every && step % every.batches === 0 && !lastOfEpoch
}

/**
 * A scheduled save at the end of `epoch`, after `step` batches of the run? Epoch schedules: every
 * n-th epoch. Batch schedules: when the epoch's last batch was due (the end of training saves too:
 * see `finalSaveDue`).
 */
export function epochSaveDue(every: SaveEvery, epoch: number, step: number): boolean {
  if (typeof every === 'object' && 'batches' in every) return step % every.batches === 0
  const n = every === 'epoch' ? 1 : every.epochs
  return (epoch + 1) % n === 0
}

/**
 * A save when training ends (its last epoch done, or stopped early as by EarlyStopping)? With a
 * batch schedule, unless the run's last save was at this step already: a finished fit's newest
 * checkpoint is then its final state.
 */
export function finalSaveDue(every: SaveEvery, step: number, lastSavedStep: number | undefined): boolean {
  return typeof every === 'object' && 'batches' in every && lastSavedStep !== step
}
