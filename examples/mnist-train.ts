// A real training job: a small MLP on real MNIST digits (the `mnist` package, MIT), TensorFlow.js
// on the wasm backend, checkpointed by taskpoint. Run it under any engine, or the local one:
//
//   taskpoint run --retries 5 --checkpoint /tmp/mnist-ckpt -- node dist/examples/mnist-train.js --epochs 8
//
// Progress goes to stderr; the final result is one JSON line on stdout.
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { parseArgs } from 'node:util'
import { currentContext, runMain, task } from '../src/index.js'
import { fitWithCheckpoints } from '../integrations/tfjs/index.js'
import { buildModel, loadMnist, testAccuracy as accuracyOf, weightsHash as modelHash } from './mnist-model.js'

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '8' },
    'train-per-digit': { type: 'string', default: '400' },
    'test-per-digit': { type: 'string', default: '100' },
    'batch-size': { type: 'string', default: '64' },
    // 0: save at epoch ends only (with N > 0, after every N-th batch of the run and when training ends)
    'save-every-batches': { type: 'string', default: '16' },
    // Instead: at the end of every N-th epoch only (a large N: never, for the overhead benchmark)
    'save-every-epochs': { type: 'string' },
    seed: { type: 'string', default: '2026' },
    backend: { type: 'string', default: 'wasm' },
    'no-checkpoint': { type: 'boolean', default: false },
  },
  strict: false,
})
const epochs = Number(values.epochs)
const batchSize = Number(values['batch-size'])
const log = (line: string): boolean => process.stderr.write(`${line}\n`)

await tf.setBackend(String(values.backend))
await tf.ready()
const data = loadMnist(tf, Number(values['train-per-digit']), Number(values['test-per-digit']))
// Seeds Math.random before building: initialisers and Dropout draw on it.
const model = buildModel(tf, { seed: Number(values.seed) })
const weightsHash = (): string => modelHash(model)
const testAccuracy = (): number => accuracyOf(tf, model, data)

const batchesPerEpoch = Math.ceil(data.train.x.shape[0]! / batchSize)

let saves = 0
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
      every: values['save-every-epochs']
        ? { epochs: Number(values['save-every-epochs']) }
        : Number(values['save-every-batches']) > 0
          ? { batches: Number(values['save-every-batches']) }
          : 'epoch',
      metadata: { model: '784-128-10', optimizer: 'adam', lr: 0.001, batchSize },
      onResume: (f) => log(`resuming from epoch ${f.epoch + 1}, batch ${f.batch}/${batchesPerEpoch}`),
      onEpoch: (e, l) => log(`epoch ${e + 1}/${epochs}  loss ${l.loss!.toFixed(4)}  acc ${(l.acc ?? 0).toFixed(4)}`),
      onSave: (s) => {
        saves++
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
    saves,
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
