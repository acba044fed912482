import type { SeededRandom } from '../../src/runtime/random.js'

// tfjs's `fit` shuffles ONE index array in place with Math.random at every epoch begin, so epoch
// k's order composes k+1 shuffles and cannot be recomputed from the generator state alone. The
// mirror keeps a copy of that permutation (never read from tfjs) so a checkpoint can store it, and
// makes a resumed process's fresh range(N) shuffle reproduce the order the uninterrupted run has.

const range = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i)

/** tfjs's util.shuffle, run on `perm` in place with `rand` (the same draws, in the same order). */
export function fisherYates(perm: Int32Array, rand: () => number): void {
  let counter = perm.length
  while (counter > 0) {
    const index = (rand() * counter) | 0
    counter--
    const t = perm[counter]!
    perm[counter] = perm[index]!
    perm[index] = t
  }
}

/**
 * The values that make tfjs's Fisher–Yates shuffle of range(N) produce `target`: at each step it
 * must pick the current position of the value that belongs at the end.
 */
export function drawsProducing(target: Int32Array): number[] {
  const n = target.length
  const arr = range(n)
  const pos = range(n)
  const draws: number[] = []
  for (let counter = n; counter > 0; ) {
    const want = target[counter - 1]!
    const index = pos[want]!
    draws.push((index + 0.5) / counter)
    counter--
    const a = arr[counter]!
    arr[counter] = arr[index]!
    arr[index] = a
    pos[arr[counter]!] = counter
    pos[arr[index]!] = index
  }
  return draws
}

/** The permutation `fit` uses in the current epoch, kept in step with tfjs's own shuffle. */
export class ShuffleMirror {
  /** Replaced (never mutated) each epoch: a save may still be copying the previous one. */
  #perm: Int32Array | undefined
  /** On resume: the permutation of the last finished epoch, whose successor the next shuffle must produce. */
  #forceFrom: Int32Array | undefined
  #warnedNoRng = false

  /** `saved`: the permutation a checkpoint stored, if it was saved from a shuffled fit. */
  constructor(saved?: Int32Array) {
    this.#perm = saved
  }

  /** The current epoch's order (sample indices in training order), or undefined when unknown. */
  get permutation(): Int32Array | undefined {
    return this.#perm
  }

  /**
   * The next `fit` starts from a fresh range(N) index array (a resumed process) while the
   * uninterrupted run's array holds the saved permutation: its first shuffle must be steered.
   */
  resumeFromSaved(): void {
    this.#forceFrom = this.#perm
  }

  /** Call in onEpochBegin, before `fit` shuffles its index array of `samples` entries with Math.random. */
  epochBegins(samples: number, rng: SeededRandom | undefined): void {
    if (!rng) {
      // Without a seeded generator the shuffle cannot be mirrored: epoch-level resume still
      // works, but not bit-exactly, and mid-epoch resume of a shuffled fit is impossible.
      this.#perm = undefined
      if (!this.#warnedNoRng) console.warn('[taskpoint] call seedRandom(seed) from taskpoint/tfjs before building the model for exact resume with shuffle: true')
      this.#warnedNoRng = true
      return
    }
    // Run the same shuffle on a copy with a fork of the generator to learn this epoch's order.
    const next = (this.#forceFrom ?? this.#perm ?? range(samples)).slice()
    const fork = rng.fork()
    fisherYates(next, () => fork.next())
    if (this.#forceFrom) {
      // Resumed: fit's indexArray is range(N) again; feed it the draws that turn range(N) into
      // the permutation the uninterrupted run has now, and move the generator on as that run did.
      rng.state = fork.state
      rng.force(drawsProducing(next))
      this.#forceFrom = undefined
    }
    this.#perm = next
  }
}
