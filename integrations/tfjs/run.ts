import type { Checkpointer } from '../../src/checkpoint/checkpointer.js'
import type { ArrayInput, StateArray } from '../../src/checkpoint/types.js'
import { maybeContext } from '../../src/runtime/context.js'
import { currentRandom } from '../../src/runtime/random.js'
import { StopOnPreemption } from '../../src/runtime/stop-on-preemption.js'
import { checkCallbackOptions, type CheckpointCallbackOptions, type SaveKind } from './options.js'
import { TrainingPosition, type SavedPosition } from './position.js'
import { ShuffleMirror } from './shuffle.js'
import { captureState, type LayersModel, type TF } from './state.js'

export const STATE_FORMAT = 'taskpoint-tfjs/1'

/** The JSON part of a tfjs checkpoint: the position, plus what restoring the model needs. */
export interface SavedTraining extends SavedPosition {
  format: typeof STATE_FORMAT
  rng?: number[]
  model: { weights: string[]; optimizer: string; optimizerSlots: string[] }
  backend: string
  kind: SaveKind
}

/**
 * One training call's state, shared by the callbacks it creates (a resumed fit runs two loops):
 * the position, the shuffle mirror, the preemption protocol, and the save that reads them.
 */
export interface TrainingRun {
  readonly checkpoint: Checkpointer
  readonly options: CheckpointCallbackOptions
  readonly position: TrainingPosition
  readonly shuffle: ShuffleMirror
  readonly preemption: StopOnPreemption
  save(kind: SaveKind): Promise<void>
  /** The step of the last save this run made, if any. */
  readonly lastSavedStep: number | undefined
}

/** A restored checkpoint: its JSON and arrays (the saved shuffle order is `arrays.perm`). */
export interface Restored {
  saved: SavedTraining
  arrays: Record<string, StateArray>
}

export function createRun(tf: TF, model: LayersModel, checkpoint: Checkpointer, options: CheckpointCallbackOptions, restored?: Restored): TrainingRun {
  checkCallbackOptions(options)
  const position = new TrainingPosition(restored?.saved)
  const perm = restored?.arrays.perm
  // A copy: the loaded arrays may share one buffer, and the mirror hands its array to later saves.
  const shuffle = new ShuffleMirror(perm && new Int32Array(perm.data.buffer.slice(perm.data.byteOffset, perm.data.byteOffset + perm.data.byteLength) as ArrayBuffer))

  let lastSavedStep: number | undefined
  const save = async (kind: SaveKind): Promise<void> => {
    const rng = currentRandom()
    const { arrays, info } = await captureState(model)
    const all: Record<string, ArrayInput> = { ...arrays }
    const order = shuffle.permutation
    if (order) all.perm = { data: order, dtype: 'int32' }
    const at = position.snapshot()
    lastSavedStep = at.globalStep
    const json: SavedTraining = { format: STATE_FORMAT, ...at, model: info, backend: tf.getBackend(), kind }
    if (rng) json.rng = rng.state
    const lastLoss = position.lastLoss
    const metadata = { ...options.metadata, epoch: at.epoch, batch: at.batch, ...(lastLoss !== undefined ? { loss: lastLoss } : {}), kind }
    const state = { arrays: all, json }
    // The preemption save must be durable before training stops: the process may die right after.
    if (options.sync || kind === 'preempt') await checkpoint.write(state, { step: at.globalStep, metadata })
    else checkpoint.writeAsync(state, { step: at.globalStep, metadata })
    options.onSave?.({ epoch: at.epoch, batch: at.batch, kind, step: at.globalStep })
  }

  const preemption = new StopOnPreemption({
    signal: options.signal ?? maybeContext()?.signal,
    save: () => save('preempt'),
    stop: () => {
      model.stopTraining = true
    },
    flush: () => checkpoint.flush(),
  })
  return {
    checkpoint,
    options,
    position,
    shuffle,
    preemption,
    save,
    get lastSavedStep() {
      return lastSavedStep
    },
  }
}
