const D = '/work/wt-fleetbench/dist'
const tf = await import('@tensorflow/tfjs'); await import('@tensorflow/tfjs-backend-wasm')
await tf.setBackend('wasm'); await tf.ready()
const m = await import(D + '/examples/mnist-model.js')
let t = performance.now(); const lap = (s) => { const n = performance.now(); console.log(s, (n - t).toFixed(0), 'ms'); t = n }
const { createRequire } = await import('node:module'); const require = createRequire(D + '/examples/mnist-model.js')
for (let d = 0; d < 10; d++) require(`mnist/src/digits/${d}.json`)
lap('require digits json')
const data = m.loadMnist(tf, 400, 100); lap('loadMnist (pack)')
const model = m.buildModel(tf, { seed: 1, units: 128, lr: 0.001 }); lap('buildModel')
await model.fit(data.train.x, data.train.y, { epochs: 1, batchSize: 64, shuffle: true, verbose: 0, callbacks: { onBatchEnd: async (b) => { if (b === 0) lap('first batch'); if (b===10) lap('10 more batches') } } }); lap('rest of epoch')
