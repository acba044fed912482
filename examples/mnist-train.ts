// A real training job: a small MLP on real MNIST digits (the `mnist` package, MIT), TensorFlow.js
// on the wasm backend, checkpointed by taskpoint. Run it under any engine, or the local one:
//
//   taskpoint run --retries 5 --checkpoint /tmp/mnist-ckpt -- node dist/examples/mnist-train.js --epochs 8
//
// Progress goes to stderr; the final result is one JSON line on stdout.
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { currentContext, runMain, task } from '../src/index.js'
import { fitWithCheckpoints, seedRandom } from '../integrations/tfjs/index.js'

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '8' },
    'train-per-digit': { type: 'string', default: '400' },
    'test-per-digit': { type: 'string', default: '100' },
    'batch-size': { type: 'string', default: '64' },
    // 0: save at epoch ends only
    'save-every-batches': { type: 'string', default: '16' },
    seed: { type: 'string', default: '2026' },
    backend: { type: 'string', default: 'wasm' },
    'no-checkpoint': { type: 'boolean', default: false },
  },
  strict: false,
})
const epochs = Number(values.epochs)
const batchSize = Number(values['batch-size'])
const log = (line: string): boolean => process.stderr.write(`${line}\n`)

/** MNIST digits by per-digit index ranges: the same split in every process, no Math.random. */
function loadMnist(trainPerDigit: number, testPerDigit: number) {
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
    idx.forEach((j, k) => xs.set(s.x.slice(j * 784, j * 784 + 784), k * 784))
    return { x: tf.tensor2d(xs, [idx.length, 784]), y: tf.oneHot(tf.tensor1d(idx.map((j) => s.y[j]!), 'int32'), 10).toFloat() }
  }
  return { train: pack(train), test: pack(test) }
}

await tf.setBackend(String(values.backend))
await tf.ready()
const data = loadMnist(Number(values['train-per-digit']), Number(values['test-per-digit']))

seedRandom(Number(values.seed)) // before building the model: initialisers and Dropout draw on it
const model = tf.sequential()
model.add(tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu' }))
model.add(tf.layers.dropout({ rate: 0.2 }))
model.add(tf.layers.dense({ units: 10, activation: 'softmax' }))
model.compile({ optimizer: tf.train.adam(0.001), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })

function weightsHash(): string {
  const h = createHash('sha256')
  for (const w of model.getWeights()) h.update(Buffer.from((w.dataSync() as Float32Array).buffer))
  return h.digest('hex')
}

function testAccuracy(): number {
  return tf.tidy(() => {
    const pred = (model.predict(data.test.x) as tf.Tensor).argMax(-1)
    const truth = data.test.y.argMax(-1)
    return pred.equal(truth).mean().dataSync()[0]!
  })
}

const batchesPerEpoch = Math.ceil(data.train.x.shape[0]! / batchSize)

const train = task({ name: 'mnist-train', version: '1' }, async () => {
  const ctx = currentContext()
  const started = Date.now()
  log('training')
  const r = await fitWithCheckpoints(
    tf,
    model,
    data.train.x,
    data.train.y,
    { epochs, batchSize, shuffle: true, verbose: 0 },
    {
      every: Number(values['save-every-batches']) > 0 ? { batches: Number(values['save-every-batches']) } : 'epoch',
      metadata: { model: '784-128-10', optimizer: 'adam', lr: 0.001, batchSize },
      onResume: (f) => log(`resuming from epoch ${f.epoch + 1}, batch ${f.batch}/${batchesPerEpoch}`),
      onEpoch: (e, l) => log(`epoch ${e + 1}/${epochs}  loss ${l.loss!.toFixed(4)}  acc ${(l.acc ?? 0).toFixed(4)}`),
      onSave: (s) => {
        if (s.kind === 'preempt') log(`preempted: final save at epoch ${s.epoch + 1}, batch ${s.batch}/${batchesPerEpoch}`)
        // For whoever watches the run (the demo preempts by progress, not by the clock).
        else log(`progress: saved epoch ${s.epoch + 1}, batch ${s.batch}/${batchesPerEpoch}`)
      },
    },
  )
  if (!r.resumedFrom) log(`attempt ${ctx.attempt} started from scratch`)
  return {
    weights: weightsHash(),
    testAccuracy: testAccuracy(),
    history: r.history,
    batchesPerEpoch,
    seconds: (Date.now() - started) / 1000,
    trainSeconds: r.timings.trainMs / 1000,
    flushSeconds: r.timings.flushMs / 1000,
  }
})

if (values['no-checkpoint']) {
  // Plain model.fit, for the overhead benchmark's baseline.
  const t = Date.now()
  await model.fit(data.train.x, data.train.y, { epochs, batchSize, shuffle: true, verbose: 0 })
  const seconds = (Date.now() - t) / 1000
  console.log(JSON.stringify({ weights: weightsHash(), testAccuracy: testAccuracy(), seconds, trainSeconds: seconds, flushSeconds: 0 }))
} else {
  await runMain(train, undefined, { graceMs: 20_000 })
}
