import * as tf from '@tensorflow/tfjs'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Checkpointer, ConfigError } from '../../src/index.js'
import {
  TfStateError,
  Xoshiro128,
  createCheckpointCallback,
  fitDatasetWithCheckpoints,
  fitWithCheckpoints,
  resume,
  seedRandom,
  type SaveKind,
} from '../../integrations/tfjs/index.js'
import { drawsProducing, fisherYates } from '../../integrations/tfjs/shuffle.js'

const quiet = { repro: false as const, onWarning: () => {} }
const open = () => Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-tfi-')), quiet)

beforeAll(async () => {
  await tf.setBackend('cpu')
})

describe('seeded Math.random', () => {
  afterAll(() => seedRandom(1).uninstall())

  it('is reproducible from its seed and from its saved state', () => {
    const r = seedRandom(42)
    const a = [Math.random(), Math.random()]
    const state = r.state
    const b = [Math.random(), Math.random(), Math.random()]
    r.state = state
    expect([Math.random(), Math.random(), Math.random()]).toEqual(b)
    seedRandom(42)
    expect([Math.random(), Math.random()]).toEqual(a)
    expect(() => new Xoshiro128([0, 0, 0, 0])).toThrow(RangeError)
  })

  it('forced draws make tfjs.util.shuffle of range(N) produce any permutation', () => {
    const r = seedRandom(3)
    for (const n of [1, 2, 7, 100]) {
      const target = Int32Array.from({ length: n }, (_, i) => i)
      fisherYates(target, () => Math.random())
      r.force(drawsProducing(target))
      const arr = Array.from({ length: n }, (_, i) => i)
      tf.util.shuffle(arr) // tfjs's own shuffle, drawing on Math.random
      expect(arr).toEqual(Array.from(target))
    }
  })
})

function model(optimizer: tf.Optimizer): tf.LayersModel {
  const m = tf.sequential()
  m.add(tf.layers.dense({ inputShape: [4], units: 6, activation: 'relu' }))
  m.add(tf.layers.dense({ units: 2 }))
  m.compile({ optimizer, loss: 'meanSquaredError' })
  return m
}

describe('drop-in callback', () => {
  it('works in the callbacks array beside others and resume() restores weights, optimizer and position', async () => {
    seedRandom(5)
    const cp = await open()
    const x = tf.randomNormal([32, 4])
    const y = tf.randomNormal([32, 2])
    const m = model(tf.train.adam(0.01))
    const saves: number[] = []
    const early = tf.callbacks.earlyStopping({ monitor: 'loss', patience: 100 })
    const cb = createCheckpointCallback(tf, m, { checkpoint: cp, sync: true, onSave: (s) => saves.push(s.epoch) })
    await m.fit(x, y, { epochs: 3, batchSize: 8, verbose: 0, callbacks: [early, cb] })
    expect(saves).toEqual([1, 2, 3])
    const before = m.getWeights().map((w) => Array.from(w.dataSync()))
    const m2 = model(tf.train.adam(0.01))
    const r = await resume(tf, m2, { checkpoint: cp })
    expect(r!.saved.epoch).toBe(3)
    expect(r!.saved.globalStep).toBe(12)
    expect(m2.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(before)
    const opt = m2.optimizer as unknown as { iterations: number; accBeta1: tf.Variable }
    expect(opt.iterations).toBe(12)
    expect(opt.accBeta1.dataSync()[0]).toBe((m.optimizer as unknown as { accBeta1: tf.Variable }).accBeta1.dataSync()[0])
    await cp.close()
  })

  it('refuses a schedule it would never save by, and a from that resume() did not return, with a ConfigError', async () => {
    // Before: 'batch', { batch: 2 }, 3 and { epochs: 0 } each made no checkpoint in a whole fit,
    // and { batches: 0 } only the final one; from: {} failed with "reading 'batch'".
    const cp = await open()
    const m = model(tf.train.adam(0.01))
    for (const every of ['batch', { batch: 2 }, 3, { epochs: 0 }, { batches: 0 }, { epochs: 1.5 }, { epochs: 1, batches: 2 }, null]) {
      expect(() => createCheckpointCallback(tf, m, { checkpoint: cp, every: every as never }), JSON.stringify(every)).toThrow(
        /every must be 'epoch', \{ epochs: n \} or \{ batches: n \} with n a whole number >= 1/,
      )
    }
    for (const from of [{}, 5, { saved: {} }]) {
      expect(() => createCheckpointCallback(tf, m, { checkpoint: cp, from: from as never })).toThrow(/from must be what resume\(\) returned/)
    }
    await expect(
      fitWithCheckpoints(tf, m, tf.zeros([4, 4]), tf.zeros([4, 2]), { epochs: 1, batchSize: 2, verbose: 0 }, { checkpoint: cp, every: 'batch' as never }),
    ).rejects.toThrow(ConfigError)
    expect(await cp.list()).toEqual([])
    expect(() => createCheckpointCallback(tf, m, { checkpoint: cp, every: { batches: 7 } })).not.toThrow()
    expect(() => createCheckpointCallback(tf, m, { checkpoint: cp, every: { epochs: 2, batches: undefined } as never })).not.toThrow()
    await cp.close()
  })

  it('refuses a checkpoint from another architecture or optimizer with a clear error', async () => {
    const cp = await open()
    const m = model(tf.train.sgd(0.1))
    await m.fit(tf.ones([4, 4]), tf.ones([4, 2]), { epochs: 1, verbose: 0, callbacks: [createCheckpointCallback(tf, m, { checkpoint: cp, sync: true })] })
    const other = tf.sequential()
    other.add(tf.layers.dense({ inputShape: [4], units: 3 }))
    other.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' })
    await expect(resume(tf, other, { checkpoint: cp })).rejects.toThrow(/different architecture/)
    await expect(resume(tf, model(tf.train.rmsprop(0.1)), { checkpoint: cp })).rejects.toThrow(/holds SGD state but the model is compiled with RMSProp/)
    await cp.close()
  })

  it('Adamax, whose state tfjs cannot read, fails with a clear error', async () => {
    const cp = await open()
    const m = model(tf.train.adamax(0.01))
    const cb = createCheckpointCallback(tf, m, { checkpoint: cp, sync: true })
    await expect(m.fit(tf.ones([4, 4]), tf.ones([4, 2]), { epochs: 1, verbose: 0, callbacks: [cb] })).rejects.toBeInstanceOf(TfStateError)
    await cp.close()
  })
})

describe('save schedule', () => {
  // 32 rows in batches of 8: 4 batches per epoch, 3 epochs, 12 steps.
  const data = (): [tf.Tensor, tf.Tensor] => [tf.randomNormal([32, 4]), tf.randomNormal([32, 2])]
  type Save = [SaveKind, number]

  it('{ batches: n } saves after every n-th batch of the run, across epochs, and at the end of the last epoch', async () => {
    seedRandom(6)
    const [x, y] = data()
    for (const [n, want] of [
      // Step 12 is no multiple of 5: the end of the last epoch saves it.
      [
        5,
        [
          ['batch', 5],
          ['batch', 10],
          ['epoch', 12],
        ],
      ],
      // Steps that end an epoch save at that epoch's end, once.
      [
        4,
        [
          ['epoch', 4],
          ['epoch', 8],
          ['epoch', 12],
        ],
      ],
      // Longer than the run: only its end.
      [100, [['epoch', 12]]],
    ] as [number, Save[]][]) {
      const cp = await open()
      const m = model(tf.train.sgd(0.1))
      const saves: Save[] = []
      const cb = createCheckpointCallback(tf, m, { checkpoint: cp, sync: true, every: { batches: n }, onSave: (s) => saves.push([s.kind, s.step]) })
      await m.fit(x, y, { epochs: 3, batchSize: 8, verbose: 0, callbacks: [cb] })
      expect(saves, `every ${n} batches`).toEqual(want)
      await cp.close()
    }
  })

  it('a resumed run keeps counting from the saved step, inside the interrupted epoch too', async () => {
    seedRandom(7)
    const [x, y] = data()
    const cp = await open()
    const stop = new AbortController()
    const first: Save[] = []
    const args = { epochs: 3, batchSize: 8, verbose: 0 as const }
    await expect(
      fitWithCheckpoints(tf, model(tf.train.sgd(0.1)), x, y, args, {
        checkpoint: cp,
        every: { batches: 3 },
        signal: stop.signal,
        onSave: (s) => first.push([s.kind, s.step]),
        onBatch: (b) => {
          if (b.step === 5) stop.abort()
        },
      }),
    ).rejects.toThrow()
    expect(first).toEqual([
      ['batch', 3],
      ['preempt', 5],
    ])
    const second: Save[] = []
    const r = await fitWithCheckpoints(tf, model(tf.train.sgd(0.1)), x, y, args, { checkpoint: cp, every: { batches: 3 }, onSave: (s) => second.push([s.kind, s.step]) })
    expect(r.resumedFrom).toEqual({ epoch: 1, batch: 1, step: 5 })
    // Steps 6-8 finish epoch 1 in a loop of their own; the end of that loop is not the end of training.
    expect(second).toEqual([
      ['batch', 6],
      ['batch', 9],
      ['epoch', 12],
    ])
    await cp.close()
  })
})

describe('save schedule at the edges', () => {
  const data = (): [tf.Tensor, tf.Tensor] => [tf.randomNormal([32, 4]), tf.randomNormal([32, 2])]
  type Save = [SaveKind, number]
  /** Stops training at the end of epoch `at`, as EarlyStopping does. */
  const stopAfter = (at: number): tf.Callback =>
    new (class extends tf.Callback {
      override async onEpochEnd(epoch: number): Promise<void> {
        if (epoch === at) (this.model as unknown as { stopTraining: boolean }).stopTraining = true
      }
    })()

  it('a fit stopped early (EarlyStopping) saves its final state, whichever side of the callback the stopper is', async () => {
    seedRandom(8)
    const [x, y] = data()
    for (const order of ['user callbacks first', 'ours first'] as const) {
      const cp = await open()
      const saves: Save[] = []
      const m = model(tf.train.sgd(0.1))
      if (order === 'user callbacks first') {
        await fitWithCheckpoints(
          tf,
          m,
          x,
          y,
          { epochs: 5, batchSize: 8, verbose: 0, callbacks: [stopAfter(1)] },
          { checkpoint: cp, every: { batches: 3 }, onSave: (s) => saves.push([s.kind, s.step]) },
        )
      } else {
        const cb = createCheckpointCallback(tf, m, { checkpoint: cp, sync: true, every: { batches: 3 }, onSave: (s) => saves.push([s.kind, s.step]) })
        await m.fit(x, y, { epochs: 5, batchSize: 8, verbose: 0, callbacks: [cb, stopAfter(1)] })
      }
      await cp.flush()
      expect(saves, order).toEqual([
        ['batch', 3],
        ['batch', 6],
        ['epoch', 8],
      ])
      const newest = await cp.latest()
      expect(newest?.step, order).toBe(8)
      await cp.close()
    }
  })

  it('fitDataset: with batchesPerEpoch a due last batch saves once, at the epoch end; without it, both', async () => {
    seedRandom(9)
    const [x, y] = data()
    // Fresh batch tensors on every pass (fitDataset disposes the ones it trained on); with
    // batchesPerEpoch, one pass serves the whole run.
    const ds = (batches: number): tf.data.Dataset<tf.TensorContainer> =>
      tf.data.generator(function* () {
        for (let i = 0; i < batches; i++) yield { xs: x.slice((i % 4) * 8, 8), ys: y.slice((i % 4) * 8, 8) }
      })
    const run = async (args: { batchesPerEpoch?: number }): Promise<Save[]> => {
      const cp = await open()
      const saves: Save[] = []
      await fitDatasetWithCheckpoints(
        tf,
        model(tf.train.sgd(0.1)),
        ds(args.batchesPerEpoch ? 12 : 4),
        { epochs: 3, verbose: 0, ...args },
        { checkpoint: cp, every: { batches: 2 }, onSave: (s) => saves.push([s.kind, s.step]) },
      )
      await cp.close()
      return saves
    }
    expect(await run({ batchesPerEpoch: 4 })).toEqual([
      ['batch', 2],
      ['epoch', 4],
      ['batch', 6],
      ['epoch', 8],
      ['batch', 10],
      ['epoch', 12],
    ])
    // An epoch of unknown length ends unannounced: its last batch saves, then its end.
    expect(await run({})).toEqual([
      ['batch', 2],
      ['batch', 4],
      ['epoch', 4],
      ['batch', 6],
      ['batch', 8],
      ['epoch', 8],
      ['batch', 10],
      ['batch', 12],
      ['epoch', 12],
    ])
  })

  it('the drop-in callback given what resume() returned goes on counting steps and keeps the history', async () => {
    seedRandom(10)
    const [x, y] = data()
    const cp = await open()
    const first: Save[] = []
    const m = model(tf.train.sgd(0.1))
    await m.fit(x, y, {
      epochs: 2,
      batchSize: 8,
      verbose: 0,
      callbacks: [createCheckpointCallback(tf, m, { checkpoint: cp, sync: true, every: { batches: 3 }, onSave: (s) => first.push([s.kind, s.step]) })],
    })
    expect(first).toEqual([
      ['batch', 3],
      ['batch', 6],
      ['epoch', 8],
    ])
    const m2 = model(tf.train.sgd(0.1))
    const from = await resume(tf, m2, { checkpoint: cp })
    expect(from?.saved.globalStep).toBe(8)
    const second: Save[] = []
    const cb = createCheckpointCallback(tf, m2, { checkpoint: cp, sync: true, every: { batches: 3 }, from, onSave: (s) => second.push([s.kind, s.step]) })
    await m2.fit(x, y, { epochs: 4, initialEpoch: from!.saved.epoch, batchSize: 8, verbose: 0, callbacks: [cb] })
    expect(second).toEqual([
      ['batch', 9],
      ['epoch', 12],
      ['batch', 15],
      ['epoch', 16],
    ])
    const last = await resume(tf, model(tf.train.sgd(0.1)), { checkpoint: cp })
    expect(last?.saved.history.epoch).toEqual([0, 1, 2, 3])
    await cp.close()
  })
})

describe('the event loop during fit', () => {
  it('turns while no save is committing: a timer that aborts the signal mid-epoch stops training long before the epoch ends', async () => {
    const { fitWithCheckpoints } = await import('../../integrations/tfjs/index.js')
    const { PreemptedError } = await import('../../src/index.js')
    seedRandom(9)
    const cp = await open()
    const n = 24_000
    const x = tf.randomNormal([n, 4])
    const y = tf.randomNormal([n, 2])
    const m = model(tf.train.sgd(0.01))
    const ac = new AbortController()
    let at: number | undefined
    // Saves at epoch ends only, so no commit is under way during the batches: only the callback's
    // own turns let the timer run. Without them it would fire after fit() returned.
    const fit = fitWithCheckpoints(
      tf,
      m,
      x,
      y,
      { epochs: 1, batchSize: 8, verbose: 0 },
      {
        checkpoint: cp,
        signal: ac.signal,
        onBatch: ({ batch }) => {
          if (batch === 5) setTimeout(() => (at ??= batch), 0)
          if (at !== undefined) ac.abort()
        },
      },
    )
    await expect(fit).rejects.toBeInstanceOf(PreemptedError)
    const saved = (await cp.readState())!.json as { batch: number }
    expect(at).toBeDefined()
    expect(saved.batch).toBeLessThan(n / 8)
    await cp.close()
  }, 60_000)
})
