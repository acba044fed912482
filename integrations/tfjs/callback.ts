import type * as tfType from '@tensorflow/tfjs'
import type { Checkpointer } from '../../src/checkpoint/checkpointer.js'
import type { ArrayInput } from '../../src/checkpoint/types.js'
import { maybeContext } from '../../src/runtime/context.js'
import { drawsProducing, fisherYates, current as currentRandom } from './random.js'
import { captureState, type LayersModel, type TF } from './state.js'

/** When to save. Default: at the end of every epoch. */
export type SaveEvery = 'epoch' | { epochs: number } | { batches: number }

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

export type SaveKind = 'epoch' | 'batch' | 'preempt'

export const STATE_FORMAT = 'taskpoint-tfjs/1'

/** The JSON part of a tfjs checkpoint. */
export interface SavedTraining {
  format: typeof STATE_FORMAT
  /** The epoch to run next, or the one in progress when `batch` > 0. */
  epoch: number
  /** Batches of `epoch` already trained. */
  batch: number
  /** Batches trained in all, across epochs: the checkpoint's step. */
  globalStep: number
  rng?: number[]
  /** Running sums of the batch logs of the epoch in progress (so its epoch mean comes out the same). */
  acc: { sums: Record<string, number>; samples: number }
  history: { epoch: number[]; history: Record<string, number[]> }
  model: { weights: string[]; optimizer: string; optimizerSlots: string[] }
  backend: string
  kind: SaveKind
}

/** Position and bookkeeping shared by the callback and the fit wrappers. */
export class Tracker {
  epoch = 0
  batch = 0
  globalStep = 0
  /** Offsets for a resumed partial epoch: the callback sees batch 0, it is really batch `batchOffset`. */
  epochOffset = 0
  batchOffset = 0
  /** The index permutation fit() uses in the current epoch (mirrored, never read from tfjs). */
  perm: Int32Array | undefined
  /** On resume: the permutation of the last finished epoch, whose shuffle the first epoch must reproduce. */
  forceFrom: Int32Array | undefined
  acc: { sums: Record<string, number>; samples: number } = { sums: {}, samples: 0 }
  history: { epoch: number[]; history: Record<string, number[]> } = { epoch: [], history: {} }
  stopped = false
  /** Preempted on the last batch of an epoch: stop once the epoch end is recorded. */
  stopAfterEpoch = false
  /** True inside the remaining-slice fit of a resumed partial epoch (no shuffle, no mirroring). */
  partial = false
  warnedNoRng = false
}

function num(v: unknown): number | undefined {
  if (typeof v === 'number') return v
  const t = v as { dataSync?: () => ArrayLike<number> } | undefined
  return t?.dataSync ? Number(t.dataSync()[0]) : undefined
}

/**
 * Builds the checkpointing callback as a subclass of the user's own `tf.Callback`, so it works in
 * the `callbacks` array beside others whatever tfjs flavour (node, wasm, cpu) is in use.
 */
export function createCheckpointCallback(tf: TF, model: LayersModel, options: CheckpointCallbackOptions, tracker = new Tracker(), mode: 'fit' | 'dataset' = 'fit'): tfType.Callback {
  const cp = options.checkpoint ?? maybeContext()?.checkpoint
  if (!cp) throw new Error('createCheckpointCallback: pass { checkpoint } or run inside a task (currentContext().checkpoint)')
  const every = options.every ?? 'epoch'
  const shuffle = mode === 'fit' && (options.shuffle ?? true)
  const signal = options.signal ?? maybeContext()?.signal
  let samples: number | undefined
  let batchSize: number | undefined

  const save = async (kind: SaveKind): Promise<void> => {
    const rng = currentRandom()
    const { arrays, info } = await captureState(model)
    const all: Record<string, ArrayInput> = { ...arrays }
    if (tracker.perm) all.perm = { data: tracker.perm, dtype: 'int32' }
    const json: SavedTraining = {
      format: 'taskpoint-tfjs/1',
      epoch: tracker.epoch,
      batch: tracker.batch,
      globalStep: tracker.globalStep,
      acc: tracker.acc,
      history: tracker.history,
      model: info,
      backend: tf.getBackend(),
      kind,
    }
    if (rng) json.rng = rng.state
    const lastLoss = tracker.history.history.loss?.at(-1)
    const metadata = { ...options.metadata, epoch: tracker.epoch, batch: tracker.batch, ...(lastLoss !== undefined ? { loss: lastLoss } : {}), kind }
    const state = { arrays: all, json }
    if (options.sync || kind === 'preempt') await cp.write(state, { step: tracker.globalStep, metadata })
    else cp.writeAsync(state, { step: tracker.globalStep, metadata })
    options.onSave?.({ epoch: tracker.epoch, batch: tracker.batch, kind, step: tracker.globalStep })
  }

  class TaskpointCheckpointCallback extends tf.Callback {
    override async onTrainBegin(): Promise<void> {
      const p = this.params as { samples?: number; batchSize?: number } | undefined
      samples = p?.samples ?? undefined
      batchSize = p?.batchSize ?? undefined
      if (shuffle && !tracker.partial && !tracker.perm && samples) tracker.perm = Int32Array.from({ length: samples }, (_, i) => i)
    }

    override async onEpochBegin(epoch: number): Promise<void> {
      tracker.epoch = epoch + tracker.epochOffset
      if (tracker.batchOffset === 0) tracker.acc = { sums: {}, samples: 0 }
      if (!shuffle || tracker.partial || !samples) return
      const rng = currentRandom()
      if (!rng) {
        // Without a seeded generator the shuffle cannot be mirrored: epoch-level resume still
        // works, but not bit-exactly, and mid-epoch resume of a shuffled fit is impossible.
        tracker.perm = undefined
        if (!tracker.warnedNoRng) console.warn('[taskpoint] call seedRandom(seed) from taskpoint/tfjs before building the model for exact resume with shuffle: true')
        tracker.warnedNoRng = true
        return
      }
      // fit() is about to run util.shuffle(indexArray) with Math.random: run the same shuffle on a
      // copy with a fork of the generator to know the permutation of this epoch.
      const base = tracker.forceFrom ?? tracker.perm ?? Int32Array.from({ length: samples }, (_, i) => i)
      const next = base.slice()
      const fork = rng.fork()
      fisherYates(next, () => fork.next())
      if (tracker.forceFrom) {
        // Resumed: fit's indexArray is range(N) again; feed it the draws that turn range(N) into
        // the permutation the uninterrupted run has now, and move the generator on as that run did.
        rng.state = fork.state
        rng.force(drawsProducing(next))
        tracker.forceFrom = undefined
      }
      tracker.perm = next
    }

    override async onBatchEnd(batch: number, logs?: tfType.Logs): Promise<void> {
      const size = num((logs as Record<string, unknown> | undefined)?.size) ?? batchSize ?? 1
      for (const [k, v] of Object.entries(logs ?? {})) {
        if (k === 'batch' || k === 'size') continue
        const n = num(v)
        if (n !== undefined) tracker.acc.sums[k] = (tracker.acc.sums[k] ?? 0) + n * size
      }
      tracker.acc.samples += size
      tracker.batch = batch + tracker.batchOffset + 1
      tracker.globalStep++
      // A fit loop of tf.Callback subclasses never yields to the event loop: without this a
      // SIGTERM handler would only run after fit() returns.
      await new Promise((r) => setImmediate(r))
      await options.onBatch?.({ epoch: tracker.epoch, batch: tracker.batch, step: tracker.globalStep })
      // fit() knows its batch count; on the last batch the epoch-end bookkeeping (history,
      // validation) must still happen, so a preemption there is handled at the epoch end.
      const lastOfEpoch = mode === 'fit' && samples && batchSize ? batch + 1 >= Math.ceil(samples / batchSize) : false
      if (signal?.aborted && !tracker.stopped) {
        model.stopTraining = true
        if (lastOfEpoch) {
          tracker.stopAfterEpoch = true
          return
        }
        tracker.stopped = true
        await save('preempt')
        return
      }
      if (typeof every === 'object' && 'batches' in every && tracker.batch % every.batches === 0 && !lastOfEpoch) await save('batch')
    }

    override async onEpochEnd(epoch: number, logs?: tfType.Logs): Promise<void> {
      if (tracker.stopped) return // a partial epoch cut by preemption is not an epoch
      const real = epoch + tracker.epochOffset
      const out: Record<string, number> = {}
      for (const [k, v] of Object.entries(tracker.acc.sums)) out[k] = v / Math.max(1, tracker.acc.samples)
      for (const [k, v] of Object.entries(logs ?? {})) {
        const n = num(v)
        if (k.startsWith('val_') && n !== undefined) out[k] = n
      }
      tracker.history.epoch.push(real)
      for (const [k, v] of Object.entries(out)) (tracker.history.history[k] ??= []).push(v)
      tracker.epoch = real + 1
      tracker.batch = 0
      tracker.batchOffset = 0
      tracker.acc = { sums: {}, samples: 0 }
      options.onEpoch?.(real, out)
      if (tracker.stopAfterEpoch || (signal?.aborted && !tracker.stopped)) {
        tracker.stopped = true
        model.stopTraining = true
        await save('preempt')
        return
      }
      const n = every === 'epoch' ? 1 : 'epochs' in every ? every.epochs : 0
      // With batch-level saves the epoch end is a save point too: it is where the next epoch resumes.
      if (n === 0 || (real + 1) % n === 0) await save('epoch')
    }
  }
  return new TaskpointCheckpointCallback()
}
