import type * as tfType from '@tensorflow/tfjs'
import { TaskpointError } from '../../src/errors.js'
import type { ArrayInput, StateArray } from '../../src/checkpoint/types.js'

export type TF = typeof tfType
export type LayersModel = tfType.LayersModel
type Tensor = tfType.Tensor
type Optimizer = tfType.Optimizer

export class TfStateError extends TaskpointError {
  constructor(message: string) {
    super('TfState', message)
  }
}

interface AdamLike {
  accBeta1?: tfType.Variable
  accBeta2?: tfType.Variable
}

/** Optimizers whose full state `getWeights()` exposes (plus Adam's accBeta counters, saved apart). */
export function checkOptimizer(opt: Optimizer | undefined): Optimizer {
  if (!opt) throw new TfStateError('the model has no optimizer: compile it (model.compile({ optimizer, loss })) before fitting with checkpoints')
  const name = opt.getClassName()
  if (name === 'Adamax') {
    throw new TfStateError(`optimizer ${name} cannot save its state in tfjs (getWeights() is not implemented); use Adam, SGD, Momentum, RMSProp, Adagrad or Adadelta`)
  }
  return opt
}

function bytesOf(t: Tensor): ArrayInput {
  // dataSync: on the cpu and wasm backends this is the tensor's own memory (no copy); the
  // checkpointer copies it once into its warm snapshot buffer.
  const data = t.dataSync() as Float32Array | Int32Array | Uint8Array
  const dtype = t.dtype === 'float32' ? 'float32' : t.dtype === 'int32' ? 'int32' : t.dtype === 'bool' ? 'bool' : 'bytes'
  if (dtype === 'bytes') throw new TfStateError(`cannot checkpoint a ${t.dtype} tensor`)
  return { data, dtype, shape: [...t.shape] }
}

/** Weights, optimizer slots and counters as named arrays, ready for `Checkpointer.writeAsync`. */
export async function captureState(model: LayersModel): Promise<{ arrays: Record<string, ArrayInput>; info: { weights: string[]; optimizer: string; optimizerSlots: string[] } }> {
  const arrays: Record<string, ArrayInput> = {}
  const weights = model.getWeights()
  weights.forEach((w, i) => void (arrays[`weights/${String(i).padStart(4, '0')}`] = bytesOf(w)))
  const opt = checkOptimizer(model.optimizer)
  // getWeights returns live variables (and a fresh iter scalar): read them now, before the next step.
  const slots = await opt.getWeights()
  slots.forEach((s, i) => void (arrays[`optimizer/${String(i).padStart(4, '0')}`] = bytesOf(s.tensor)))
  for (const s of slots) if (s.name === 'iter') s.tensor.dispose()
  const adam = opt as unknown as AdamLike
  // Adam multiplies its beta powers step by step in float32; setWeights would recompute them with
  // pow() and differ in the last bits, so they are saved and restored as they are.
  if (adam.accBeta1 && adam.accBeta2) {
    arrays['optimizer/accBeta1'] = bytesOf(adam.accBeta1)
    arrays['optimizer/accBeta2'] = bytesOf(adam.accBeta2)
  }
  return {
    arrays,
    info: { weights: weights.map((w) => w.shape.join('x')), optimizer: opt.getClassName(), optimizerSlots: slots.map((s) => s.name) },
  }
}

function toTensor(tf: TF, a: StateArray, what: string): Tensor {
  const shape = a.shape ?? []
  const src = a.data
  // Copy out of the (possibly shared) checkpoint buffer into a plain typed array of the right type.
  const buf = src.buffer.slice(src.byteOffset, src.byteOffset + src.byteLength) as ArrayBuffer
  switch (a.dtype) {
    case 'float32':
      return tf.tensor(new Float32Array(buf), shape, 'float32')
    case 'int32':
      return tf.tensor(new Int32Array(buf), shape, 'int32')
    case 'bool':
      return tf.tensor(new Uint8Array(buf), shape, 'bool')
    default:
      throw new TfStateError(`${what}: unsupported dtype ${a.dtype}`)
  }
}

/** Puts weights and optimizer state back; checks the checkpoint fits this model first. */
export async function restoreState(
  tf: TF,
  model: LayersModel,
  arrays: Record<string, StateArray>,
  info: { weights: string[]; optimizer: string; optimizerSlots: string[] },
): Promise<void> {
  const current = model.getWeights().map((w) => w.shape.join('x'))
  if (current.length !== info.weights.length || current.some((s, i) => s !== info.weights[i])) {
    throw new TfStateError(
      `the checkpoint's weights (${info.weights.length}: ${info.weights.slice(0, 4).join(', ')}…) do not fit this model (${current.length}: ${current.slice(0, 4).join(', ')}…): it was saved from a different architecture`,
    )
  }
  const opt = checkOptimizer(model.optimizer)
  if (opt.getClassName() !== info.optimizer) throw new TfStateError(`the checkpoint holds ${info.optimizer} state but the model is compiled with ${opt.getClassName()}`)
  const ws = info.weights.map((_, i) => toTensor(tf, arrays[`weights/${String(i).padStart(4, '0')}`]!, `weight ${i}`))
  model.setWeights(ws)
  tf.dispose(ws)
  const slots = info.optimizerSlots.map((name, i) => ({ name, tensor: toTensor(tf, arrays[`optimizer/${String(i).padStart(4, '0')}`]!, `optimizer slot ${name}`) }))
  await opt.setWeights(slots)
  tf.dispose(slots.map((s) => s.tensor))
  const adam = opt as unknown as AdamLike
  const b1 = arrays['optimizer/accBeta1']
  const b2 = arrays['optimizer/accBeta2']
  if (adam.accBeta1 && adam.accBeta2 && b1 && b2) {
    const t1 = toTensor(tf, b1, 'accBeta1')
    const t2 = toTensor(tf, b2, 'accBeta2')
    adam.accBeta1.assign(t1)
    adam.accBeta2.assign(t2)
    tf.dispose([t1, t2])
  }
}
