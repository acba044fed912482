import * as tf from '@tensorflow/tfjs'
import { afterAll, describe, expect, it } from 'vitest'
import { seedRandom } from '../../integrations/tfjs/index.js'
import { ShuffleMirror } from '../../integrations/tfjs/shuffle.js'

// tfjs's fit shuffles one index array in place with Math.random at each epoch begin; the mirror
// must know that order without reading it from tfjs, and steer a resumed process's fresh array.
const N = 50
const range = (): number[] => Array.from({ length: N }, (_, i) => i)

describe('ShuffleMirror', () => {
  afterAll(() => seedRandom(1).uninstall())

  it("knows each epoch's order, and a resumed process reproduces the next order and the generator after it", () => {
    const rng = seedRandom(9)
    const mirror = new ShuffleMirror()
    const live = range() // fit's indexArray, shuffled in place every epoch
    const orders: number[][] = []
    const after: number[] = []
    for (let epoch = 0; epoch < 3; epoch++) {
      mirror.epochBegins(N, rng)
      tf.util.shuffle(live)
      expect(Array.from(mirror.permutation!)).toEqual(live)
      orders.push([...live])
      after.push(Math.random()) // a Dropout draw during the epoch
    }

    // A fresh process resumed after epoch 0: generator state and permutation as a checkpoint holds them.
    const saved = seedRandom(9)
    const first = new ShuffleMirror()
    first.epochBegins(N, saved)
    tf.util.shuffle(range())
    Math.random()
    const state = saved.state
    const perm = first.permutation!.slice()

    const resumed = seedRandom(12345) // whatever the new process seeded: the checkpoint's state wins
    resumed.state = state
    const mirror2 = new ShuffleMirror(perm)
    mirror2.resumeFromSaved()
    for (let epoch = 1; epoch < 3; epoch++) {
      mirror2.epochBegins(N, resumed)
      const fresh = epoch === 1 ? range() : [...orders[epoch - 1]!] // epoch 1 is the resumed fit's first: range(N) again
      tf.util.shuffle(fresh)
      expect(fresh).toEqual(orders[epoch])
      expect(Array.from(mirror2.permutation!)).toEqual(orders[epoch])
      expect(Math.random()).toBe(after[epoch])
    }
  })

  it('without a seeded generator it forgets the order (and warns once) instead of guessing', () => {
    seedRandom(1).uninstall()
    const warn = console.warn
    const warnings: unknown[] = []
    console.warn = (m: unknown) => void warnings.push(m)
    try {
      const mirror = new ShuffleMirror(Int32Array.from(range()))
      mirror.epochBegins(N, undefined)
      mirror.epochBegins(N, undefined)
      expect(mirror.permutation).toBeUndefined()
      expect(warnings).toHaveLength(1)
    } finally {
      console.warn = warn
    }
  })
})
