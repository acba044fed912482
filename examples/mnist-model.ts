// The MNIST model of the demo, in pieces that the single-job trainer (mnist-train.ts) and the
// fleet worker (fleet/) share: the data split, the model, and the fingerprints of a result.
import type * as tfType from '@tensorflow/tfjs'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { seedRandom } from '../integrations/tfjs/index.js'

type TF = typeof tfType

export interface MnistData {
  train: { x: tfType.Tensor2D; y: tfType.Tensor }
  test: { x: tfType.Tensor2D; y: tfType.Tensor }
}

/** MNIST digits by per-digit index ranges: the same split in every process, no Math.random. */
export function loadMnist(tf: TF, trainPerDigit: number, testPerDigit: number): MnistData {
  const require = createRequire(import.meta.url)
  const train: { x: number[]; y: number[] } = { x: [], y: [] }
  const test: { x: number[]; y: number[] } = { x: [], y: [] }
  for (let d = 0; d < 10; d++) {
    const raw = (require(`mnist/src/digits/${d}.json`) as { data: number[] }).data
    for (let i = 0; i < trainPerDigit + testPerDigit; i++) {
      const into = i < trainPerDigit ? train : test
      for (let p = 0; p < 784; p++) into.x.push(raw[i * 784 + p]!)
      into.y.push(d)
    }
  }
  // Interleave digits so batches are mixed even with shuffle off (a fixed, seed-free order).
  const order = (n: number) => Array.from({ length: n }, (_, i) => (i % 10) * (n / 10) + Math.floor(i / 10))
  const pack = (s: { x: number[]; y: number[] }) => {
    const idx = order(s.y.length)
    const xs = new Float32Array(idx.length * 784)
    idx.forEach((j, k) => void xs.set(s.x.slice(j * 784, j * 784 + 784), k * 784))
    return {
      x: tf.tensor2d(xs, [idx.length, 784]),
      y: tf
        .oneHot(
          tf.tensor1d(
            idx.map((j) => s.y[j]!),
            'int32',
          ),
          10,
        )
        .toFloat(),
    }
  }
  return { train: pack(train), test: pack(test) }
}

export interface ModelSpec {
  seed: number
  /** Hidden units. Default 128. */
  units?: number
  /** Adam learning rate. Default 0.001. */
  lr?: number
  /** Dropout rate after the hidden layer. Default 0.2. */
  dropout?: number
}

/** 784-units-10 MLP with Dropout and Adam. Seeds Math.random first: initialisers and Dropout draw on it. */
export function buildModel(tf: TF, spec: ModelSpec): tfType.Sequential {
  seedRandom(spec.seed)
  const model = tf.sequential()
  model.add(tf.layers.dense({ inputShape: [784], units: spec.units ?? 128, activation: 'relu' }))
  model.add(tf.layers.dropout({ rate: spec.dropout ?? 0.2 }))
  model.add(tf.layers.dense({ units: 10, activation: 'softmax' }))
  model.compile({ optimizer: tf.train.adam(spec.lr ?? 0.001), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })
  return model
}

/** sha256 of the final weights: equal hashes mean bit-identical models. */
export function weightsHash(model: tfType.LayersModel): string {
  const h = createHash('sha256')
  for (const w of model.getWeights()) h.update(Buffer.from((w.dataSync() as Float32Array).buffer))
  return h.digest('hex')
}

export function testAccuracy(tf: TF, model: tfType.LayersModel, data: MnistData): number {
  return tf.tidy(() => {
    const pred = (model.predict(data.test.x) as tfType.Tensor).argMax(-1)
    const truth = data.test.y.argMax(-1)
    return pred.equal(truth).mean().dataSync()[0]!
  })
}
