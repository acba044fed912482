import { inIoScope } from '../io-scope.js'

// A seeded, checkpointable Math.random, for any training integration. Frameworks draw on
// Math.random behind the user's back (tfjs: the per-epoch shuffle of `fit`, Dropout masks,
// unseeded initialisers): exact resume needs the generator's state saved with the weights and put
// back at the right instant. What a framework does with the draws (tfjs's shuffle mirroring) stays
// in its integration.

/** xoshiro128** (Blackman & Vigna): small, fast, and its whole state is four 32-bit words. */
export class Xoshiro128 {
  private s: Uint32Array
  constructor(state: ArrayLike<number>) {
    this.s = Uint32Array.from(state)
    if (this.s.length !== 4 || this.s.every((v) => v === 0)) throw new RangeError('xoshiro128 state must be four words, not all zero')
  }

  static fromSeed(seed: number): Xoshiro128 {
    // splitmix32 spreads any seed (even 0) over the four state words.
    let x = seed >>> 0
    const words: number[] = []
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
      words.push((z ^ (z >>> 16)) >>> 0)
    }
    return new Xoshiro128(words)
  }

  nextUint32(): number {
    const s = this.s
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0
    const t = (s[1]! << 9) >>> 0
    s[2]! ^= s[0]!
    s[3]! ^= s[1]!
    s[1]! ^= s[2]!
    s[0]! ^= s[3]!
    s[2]! ^= t
    s[3] = rotl(s[3]!, 11)
    return result
  }

  /** [0, 1) with 32 bits of randomness, like many Math.random implementations. */
  next(): number {
    return this.nextUint32() / 4294967296
  }

  get state(): number[] {
    return Array.from(this.s)
  }

  clone(): Xoshiro128 {
    return new Xoshiro128(this.s)
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

/**
 * The installed Math.random. `force` queues exact values to return next (used to make tfjs's
 * Fisher–Yates shuffle of `range(N)` produce a saved permutation) while the real generator is
 * advanced separately, so the stream of values after the forced ones is unchanged.
 */
export class SeededRandom {
  private gen: Xoshiro128
  private forced: number[] = []
  private readonly original: () => number

  private constructor(seed: number) {
    this.gen = Xoshiro128.fromSeed(seed)
    this.original = Math.random
  }

  static install(seed: number): SeededRandom {
    const existing = currentRandom()
    if (existing) existing.uninstall()
    const r = new SeededRandom(seed)
    // Calls made on taskpoint's behalf (storage SDKs during a background upload) get the original
    // generator: they happen at unpredictable moments and must not shift the training's stream.
    const f = (): number => (inIoScope() ? r.original() : r.forced.length > 0 ? r.forced.shift()! : r.gen.next())
    Object.defineProperty(f, TAG, { value: r })
    Math.random = f
    return r
  }

  get state(): number[] {
    return this.gen.state
  }

  set state(s: number[]) {
    this.gen = new Xoshiro128(s)
    this.forced = []
  }

  /** A copy of the generator, for looking ahead without consuming. */
  fork(): Xoshiro128 {
    return this.gen.clone()
  }

  force(values: number[]): void {
    this.forced.push(...values)
  }

  uninstall(): void {
    if (currentRandom() === this) Math.random = this.original
  }
}

const TAG = Symbol.for('taskpoint.seededRandom')

/** The SeededRandom behind Math.random, if one is installed. */
export function currentRandom(): SeededRandom | undefined {
  return (Math.random as unknown as Record<symbol, SeededRandom | undefined>)[TAG]
}

/**
 * Seeds Math.random with a generator whose state taskpoint saves in checkpoints. Call it before
 * building the model (initialisers draw on it) for runs that must resume bit-exactly.
 */
export function seedRandom(seed: number): SeededRandom {
  return SeededRandom.install(seed)
}
