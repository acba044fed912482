import type * as tfType from '@tensorflow/tfjs'
import type { Checkpointer } from '../../src/checkpoint/checkpointer.js'
import { maybeContext } from '../../src/runtime/context.js'
import { currentRandom } from '../../src/runtime/random.js'
import { checkpointCallback } from './callback.js'
import type { CheckpointCallbackOptions } from './options.js'
import type { TrainingHistory } from './position.js'
import { STATE_FORMAT, createRun, type Restored, type SavedTraining, type TrainingRun } from './run.js'
import { TfStateError, restoreState, type LayersModel, type TF } from './state.js'

type Tensor = tfType.Tensor
type Tensors = Tensor | Tensor[]

export interface FitResult {
  /** Per-epoch mean logs of the whole run, including epochs trained by earlier attempts. */
  history: TrainingHistory
  /** Where this run started: undefined for a fresh start. */
  resumedFrom?: { epoch: number; batch: number; step: number }
  /** Batches trained by this call. */
  trainedBatches: number
  /** Time spent training (restore included) and waiting at the end for the last save to be durable. */
  timings: { trainMs: number; flushMs: number }
}

function checkpointOf(o: CheckpointCallbackOptions): Checkpointer {
  const cp = o.checkpoint ?? maybeContext()?.checkpoint
  if (!cp) throw new TfStateError('no checkpoint: pass { checkpoint } or call from inside a task (currentContext().checkpoint)')
  return cp
}

/** Restores the newest tfjs checkpoint into the model (weights, optimizer, generator); undefined when there is none. */
export async function resume(tf: TF, model: LayersModel, options: { checkpoint?: Checkpointer } = {}): Promise<Restored | undefined> {
  const cp = checkpointOf(options)
  const st = await cp.readState()
  if (!st) return undefined
  const saved = st.json as SavedTraining
  if (!saved || saved.format !== STATE_FORMAT)
    throw new TfStateError(`the newest checkpoint at ${cp.uri} is not a tfjs training checkpoint (format ${String((saved as { format?: unknown })?.format)})`)
  if (saved.backend !== tf.getBackend()) {
    console.warn(`[taskpoint] resuming a ${saved.backend} checkpoint on the ${tf.getBackend()} backend: training goes on, but not bit-identically (backends round differently)`)
  }
  await restoreState(tf, model, st.arrays, saved.model)
  const rng = currentRandom()
  if (saved.rng && rng) rng.state = saved.rng
  return { saved, arrays: st.arrays }
}

function gatherRows(tf: TF, x: Tensors, idx: Int32Array): Tensors {
  const ids = tf.tensor1d(idx, 'int32')
  const out = Array.isArray(x) ? x.map((t) => tf.gather(t, ids)) : tf.gather(x, ids)
  ids.dispose()
  return out
}

function sliceRows(tf: TF, x: Tensors, start: number, end?: number): Tensors {
  const cut = (t: Tensor): Tensor => tf.slice(t, [start], [(end ?? t.shape[0]!) - start])
  return Array.isArray(x) ? x.map(cut) : cut(x)
}

/**
 * `model.fit` that survives preemption: resumes from the newest checkpoint (weights, optimizer,
 * position within the epoch, shuffle order, random generator), saves as `every` says, and on
 * preemption makes one last save and throws PreemptedError. With `seedRandom(seed)` called before
 * the model was built, a resumed run ends bit-identical to an uninterrupted one on the same backend.
 */
export async function fitWithCheckpoints(
  tf: TF,
  model: LayersModel,
  x: Tensors,
  y: Tensors,
  args: tfType.ModelFitArgs,
  options: CheckpointCallbackOptions = {},
): Promise<FitResult> {
  const started = performance.now()
  const cp = checkpointOf(options)
  const shuffle = args.shuffle ?? true
  const batchSize = args.batchSize ?? 32
  let fitArgs: tfType.ModelFitArgs = { ...args }
  let trainX = x
  let trainY = y
  const owned: Tensors[] = []
  if (args.validationSplit) {
    // Split once, as fit would, so that a resumed partial epoch validates on the same rows.
    const n = (Array.isArray(x) ? x[0]! : x).shape[0]!
    const at = Math.floor(n * (1 - args.validationSplit))
    trainX = sliceRows(tf, x, 0, at)
    trainY = sliceRows(tf, y, 0, at)
    const vx = sliceRows(tf, x, at)
    const vy = sliceRows(tf, y, at)
    owned.push(trainX, trainY, vx, vy)
    fitArgs = { ...fitArgs, validationSplit: undefined, validationData: [vx, vy] as never }
  }
  const { restored, run, result } = await begin(tf, model, cp, options)
  const { position } = run
  const userCallbacks = callbacksOf(args)
  try {
    if (restored && restored.saved.batch > 0) {
      // Finish the interrupted epoch first: the rows it had not reached yet, in its own order.
      const n = (Array.isArray(trainX) ? trainX[0]! : trainX).shape[0]!
      const from = restored.saved.batch * batchSize
      const order = run.shuffle.permutation
      if (shuffle && !order) throw new TfStateError('the checkpoint was saved mid-epoch without the shuffle order (no seedRandom?); cannot resume mid-epoch exactly')
      const idx = order ? order.slice(from) : Int32Array.from({ length: n - from }, (_, i) => from + i)
      if (idx.length > 0) {
        const rx = gatherRows(tf, trainX, idx)
        const ry = gatherRows(tf, trainY, idx)
        position.resumeInsideEpoch(true)
        // Its rows are already in order: no shuffle to mirror, and user callbacks are not run.
        const cb = checkpointCallback(tf, model, run, 'fit', false, args.epochs ?? 1)
        try {
          await model.fit(rx, ry, { ...fitArgs, epochs: 1, initialEpoch: 0, shuffle: false, callbacks: [cb] })
        } finally {
          tf.dispose([rx, ry].flat())
        }
        position.partialLoopDone()
        run.preemption.throwIfStopped()
      }
    }
    const startEpoch = position.epoch
    if (shuffle && startEpoch > 0) run.shuffle.resumeFromSaved()
    const epochs = args.epochs ?? 1
    if (startEpoch < epochs) {
      const cb = checkpointCallback(tf, model, run, 'fit', shuffle, epochs)
      await model.fit(trainX, trainY, { ...fitArgs, initialEpoch: startEpoch, callbacks: [...userCallbacks, cb] as never })
    }
    return await finish(run, result, started)
  } finally {
    tf.dispose(owned.flat())
  }
}

/**
 * `model.fitDataset` with checkpoints: as `fitWithCheckpoints`, for datasets. A resumed run
 * replays the dataset's iterator() calls and skips the batches already trained, so a dataset
 * shuffled with a seed (`dataset.shuffle(n, seed)`) yields the same batches in the same order.
 */
export async function fitDatasetWithCheckpoints<T extends tfType.TensorContainer>(
  tf: TF,
  model: LayersModel,
  dataset: tfType.data.Dataset<T>,
  args: tfType.ModelFitDatasetArgs<T>,
  options: CheckpointCallbackOptions = {},
): Promise<FitResult> {
  const started = performance.now()
  const cp = checkpointOf(options)
  const { restored, run, result } = await begin(tf, model, cp, options)
  const { position } = run
  const rng = currentRandom()
  const savedRng = restored?.saved.rng
  const userCallbacks = callbacksOf(args)
  const cb = checkpointCallback(tf, model, run, 'dataset', false, args.epochs)
  const skipBatches = async (it: { next(): Promise<{ done?: boolean; value: unknown }> }, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = await it.next()
      if (r.done) break
      tf.dispose(r.value as never)
    }
  }
  const perEpoch = args.batchesPerEpoch
  if (perEpoch) {
    // With batchesPerEpoch, fitDataset makes one iterator for the whole run. Make it here, move it
    // past every batch already trained, and hand the same live iterator to each fitDataset call.
    const it = await dataset.iterator()
    if (restored) {
      await skipBatches(it, restored.saved.epoch * perEpoch + restored.saved.batch)
      if (rng && savedRng) rng.state = savedRng
    }
    const same = Object.create(dataset) as tfType.data.Dataset<T>
    same.iterator = async () => it as never
    if (restored && restored.saved.batch > 0) {
      // Finish the interrupted epoch with just its remaining batches.
      position.resumeInsideEpoch(true)
      await model.fitDataset(same, { ...args, epochs: 1, initialEpoch: 0, batchesPerEpoch: perEpoch - restored.saved.batch, callbacks: [cb] })
      position.partialLoopDone()
    }
    if (!run.preemption.stopped && position.epoch < args.epochs) {
      await model.fitDataset(same, { ...args, initialEpoch: position.epoch, callbacks: [...userCallbacks, cb] as never })
    }
    return finish(run, result, started)
  }
  // Without it, fitDataset calls iterator() once up front and once per epoch; each call moves a
  // seeded dataset's generator on. Replay the calls made before the interrupted epoch's, then skip
  // the batches already trained from that epoch's iterator.
  if (restored) for (let i = 0; i < restored.saved.epoch; i++) await dataset.iterator()
  // fitDataset numbers epochs from initialEpoch; only the resumed epoch's batches restart at 0.
  if (restored) position.resumeInsideEpoch(false)
  const skip = restored?.saved.batch ?? 0
  let calls = 0
  // Every other property (size, ...) comes from the user's dataset.
  const proxy = Object.create(dataset) as tfType.data.Dataset<T>
  proxy.iterator = async () => {
    const resuming = ++calls === 2 && restored !== undefined
    // The generator state was saved after this iterator was made (mid-epoch) or before (epoch end).
    if (resuming && skip === 0 && rng && savedRng) rng.state = savedRng
    const it = await dataset.iterator()
    if (resuming && skip > 0) {
      await skipBatches(it, skip)
      if (rng && savedRng) rng.state = savedRng
    }
    return it
  }
  if (position.epoch < args.epochs) {
    await model.fitDataset(proxy, { ...args, initialEpoch: position.epoch, callbacks: [...userCallbacks, cb] as never })
  }
  return finish(run, result, started)
}

/** The common start of both wrappers: restore the newest checkpoint and the position it records. */
async function begin(tf: TF, model: LayersModel, cp: Checkpointer, options: CheckpointCallbackOptions) {
  const restored = await resume(tf, model, { checkpoint: cp })
  const run = createRun(tf, model, cp, options, restored)
  const result: FitResult = { history: run.position.history, trainedBatches: 0, timings: { trainMs: 0, flushMs: 0 } }
  if (restored) {
    result.resumedFrom = { epoch: restored.saved.epoch, batch: restored.saved.batch, step: restored.saved.globalStep }
    options.onResume?.(result.resumedFrom)
  }
  return { restored, run, result }
}

function callbacksOf(args: { callbacks?: unknown }): unknown[] {
  return args.callbacks === undefined ? [] : Array.isArray(args.callbacks) ? args.callbacks : [args.callbacks]
}

/** The common end of both wrappers: wait for the last save, then report, or stop with PreemptedError. */
async function finish(run: TrainingRun, result: FitResult, started: number): Promise<FitResult> {
  result.timings.trainMs = performance.now() - started
  await run.preemption.settle()
  result.timings.flushMs = performance.now() - started - result.timings.trainMs
  result.history = run.position.history
  result.trainedBatches = run.position.globalStep - (result.resumedFrom?.step ?? 0)
  return result
}
