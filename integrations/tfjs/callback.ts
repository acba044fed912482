import type * as tfType from '@tensorflow/tfjs'
import { maybeContext } from '../../src/runtime/context.js'
import { currentRandom } from '../../src/runtime/random.js'
import { batchSaveDue, checkCallbackOptions, epochSaveDue, finalSaveDue, type CheckpointCallbackOptions } from './options.js'
import { createRun, type Restored, type TrainingRun } from './run.js'
import { TfStateError, type LayersModel, type TF } from './state.js'

// The tfjs side of checkpointing: turns fit's callback events into calls on the run's position,
// shuffle mirror and preemption protocol. It holds no training state of its own beyond what fit
// announces at onTrainBegin.

export { STATE_FORMAT, type SavedTraining } from './run.js'
export type { CheckpointCallbackOptions, SaveEvery, SaveKind } from './options.js'

/** The longest the callback goes without turning the event loop while no commit is under way. */
const YIELD_MS = 50

/** A log value as a number: subclass callbacks get Tensor scalars, plain-object ones numbers. */
function num(v: unknown): number | undefined {
  if (typeof v === 'number') return v
  const t = v as { dataSync?: () => ArrayLike<number> } | undefined
  return t?.dataSync ? Number(t.dataSync()[0]) : undefined
}

/** The entries of `logs` that `want` names, as numbers (only those are read: others may be disposed tensors). */
function numbers(logs: tfType.Logs | undefined, want: (key: string) => boolean): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(logs ?? {})) {
    if (!want(k)) continue
    const n = num(v)
    if (n !== undefined) out[k] = n
  }
  return out
}

/**
 * Builds the checkpointing callback as a subclass of the user's own `tf.Callback`, so it works in
 * the `callbacks` array beside others whatever tfjs flavour (node, wasm, cpu) is in use.
 */
export function createCheckpointCallback(tf: TF, model: LayersModel, options: CheckpointCallbackOptions): tfType.Callback {
  const cp = options.checkpoint ?? maybeContext()?.checkpoint
  if (!cp) throw new TfStateError('createCheckpointCallback: pass { checkpoint } or run inside a task (currentContext().checkpoint)')
  checkCallbackOptions(options)
  return checkpointCallback(tf, model, createRun(tf, model, cp, options, epochStartOf(options.from)), 'fit', options.shuffle ?? true)
}

/**
 * Where a drop-in callback goes on from: the restored checkpoint's epoch, from its start (the user's
 * fit restarts that epoch), with its steps and history. Steps never go back, even where the epoch's
 * first batches are trained again.
 */
function epochStartOf(from: Restored | undefined): Restored | undefined {
  if (!from || from.saved.batch === 0) return from
  return { ...from, saved: { ...from.saved, batch: 0, acc: { sums: {}, samples: 0 } } }
}

/**
 * The callback for one loop of `run`. `loop`: fit knows its batch count, so a preemption on an
 * epoch's last batch can wait for the epoch end; fitDataset does not. `shuffle`: mirror fit's
 * per-epoch shuffle (false for fitDataset and for the unshuffled remaining-rows fit of a resume).
 */
export function checkpointCallback(
  tf: TF,
  model: LayersModel,
  run: TrainingRun,
  loop: 'fit' | 'dataset',
  shuffle: boolean,
  /** Epochs of the whole training, where this loop's own `epochs` is not (a resumed partial epoch's loop). */
  totalEpochs?: number,
): tfType.Callback {
  const { position, options, preemption } = run
  const every = options.every ?? 'epoch'
  const mirror = loop === 'fit' && shuffle
  let samples: number | undefined
  let batchSize: number | undefined
  // The training's epochs, known from onTrainBegin on.
  let epochs: number | undefined
  // fitDataset's batches per epoch, when given (batchesPerEpoch); else an epoch ends unannounced.
  let steps: number | undefined
  // A fit loop of tf.Callback subclasses never turns the event loop: without a turn a SIGTERM
  // handler would only run after fit() returns, and a background commit, whose file and network
  // operations each resume on this thread, would wait for it too. A turn is not free for the
  // training loop, so it is taken at every batch only while a commit is under way, and otherwise
  // once YIELD_MS have passed (a signal is seen within that; fit()'s own yieldEvery 'auto' waits
  // 125 ms).
  let lastTurn = performance.now()
  const turn = async (): Promise<void> => {
    if (!run.checkpoint.committing && performance.now() - lastTurn < YIELD_MS) return
    await new Promise((r) => setImmediate(r))
    lastTurn = performance.now()
  }

  class TaskpointCheckpointCallback extends tf.Callback {
    override async onTrainBegin(): Promise<void> {
      const p = this.params as { samples?: number; batchSize?: number; epochs?: number; steps?: number } | undefined
      samples = p?.samples ?? undefined
      batchSize = p?.batchSize ?? undefined
      epochs = totalEpochs ?? p?.epochs ?? undefined
      steps = p?.steps ?? undefined
    }

    override async onEpochBegin(epoch: number): Promise<void> {
      position.beginEpoch(epoch)
      // fit() is about to shuffle its index array with Math.random.
      if (mirror && samples) run.shuffle.epochBegins(samples, currentRandom())
    }

    override async onBatchEnd(batch: number, logs?: tfType.Logs): Promise<void> {
      const size = num((logs as Record<string, unknown> | undefined)?.size) ?? batchSize ?? 1
      position.endBatch(
        batch,
        numbers(logs, (k) => k !== 'batch' && k !== 'size'),
        size,
      )
      await turn()
      await options.onBatch?.({ epoch: position.epoch, batch: position.batch, step: position.globalStep })
      // On an epoch's last batch the epoch-end bookkeeping (history, validation) must still
      // happen, so a preemption there is handled at the epoch end.
      const lastOfEpoch = loop === 'fit' && samples && batchSize ? batch + 1 >= Math.ceil(samples / batchSize) : false
      if (await preemption.atStep(lastOfEpoch)) return
      // A save due on an epoch's last batch is made at its end. A dataset of unknown length cannot
      // tell its last batch: there both are made.
      const endsEpoch = lastOfEpoch || (loop === 'dataset' && steps !== undefined && batch + 1 >= steps)
      if (batchSaveDue(every, position.globalStep, endsEpoch)) await run.save('batch')
    }

    override async onEpochEnd(epoch: number, logs?: tfType.Logs): Promise<void> {
      if (preemption.stopped) return // a partial epoch cut by preemption is not an epoch
      const ended = position.endEpoch(
        epoch,
        numbers(logs, (k) => k.startsWith('val_')),
      )
      options.onEpoch?.(ended.epoch, ended.means)
      if (await preemption.atEpochEnd()) return
      if (epochSaveDue(every, ended.epoch, position.globalStep)) await run.save('epoch')
    }

    override async onTrainEnd(): Promise<void> {
      if (preemption.stopped) return
      // The end of training: its last epoch done, or stopped early (EarlyStopping). The end of a
      // resumed partial epoch's own loop is neither.
      const ended = (epochs !== undefined && position.epoch >= epochs) || model.stopTraining === true
      if (ended && finalSaveDue(every, position.globalStep, run.lastSavedStep)) await run.save('epoch')
    }
  }
  return new TaskpointCheckpointCallback()
}
