// Where training stands, owned in one place: the callback reports loop events, the fit wrappers
// say how a resumed run numbers its loops, and saves take a snapshot. Nothing here imports tfjs, so
// its invariants are tested without a model, and it can move to src/runtime as it is once a second
// integration needs it (its snapshot is part of the taskpoint-tfjs/1 checkpoint format: keep it).

/** Running sums of the batch logs of the epoch in progress (so its epoch mean comes out the same after a resume). */
export interface EpochSums {
  sums: Record<string, number>
  samples: number
}

/** Per-epoch mean logs, as tfjs's History has them. */
export interface TrainingHistory {
  epoch: number[]
  history: Record<string, number[]>
}

/** The position as a checkpoint stores it (part of SavedTraining). */
export interface SavedPosition {
  /** The epoch to run next, or the one in progress when `batch` > 0. */
  epoch: number
  /** Batches of `epoch` already trained. */
  batch: number
  /** Batches trained in all, across epochs: the checkpoint's step. */
  globalStep: number
  acc: EpochSums
  history: TrainingHistory
}

const noSums = (): EpochSums => ({ sums: {}, samples: 0 })

/**
 * Invariants: `batch` counts the batches of `epoch` already applied (0 at an epoch boundary);
 * `globalStep` goes up by exactly one per applied batch; the epoch's sums cover exactly those
 * `batch` batches (a resumed partial epoch keeps the sums it was saved with); history gains one
 * entry per finished epoch, in order.
 */
export class TrainingPosition {
  #epoch = 0
  #batch = 0
  #globalStep = 0
  // A resumed partial epoch runs in a loop that numbers it afresh: the loop's epoch/batch 0 is
  // really epoch `#epochOffset` / batch `#batchOffset`.
  #epochOffset = 0
  #batchOffset = 0
  #acc: EpochSums = noSums()
  #history: TrainingHistory = { epoch: [], history: {} }

  /** A fresh start, or the position a checkpoint recorded. */
  constructor(saved?: SavedPosition) {
    if (!saved) return
    this.#epoch = saved.epoch
    this.#batch = saved.batch
    this.#globalStep = saved.globalStep
    this.#acc = structuredClone(saved.acc)
    this.#history = structuredClone(saved.history)
  }

  get epoch(): number {
    return this.#epoch
  }

  get batch(): number {
    return this.#batch
  }

  get globalStep(): number {
    return this.#globalStep
  }

  /** A copy: the history of every finished epoch, earlier attempts' included. */
  get history(): TrainingHistory {
    return structuredClone(this.#history)
  }

  /** The newest finished epoch's mean loss, if any. */
  get lastLoss(): number | undefined {
    return this.#history.history.loss?.at(-1)
  }

  /** A copy of everything a checkpoint stores, taken now (training goes on while it uploads). */
  snapshot(): SavedPosition {
    return { epoch: this.#epoch, batch: this.#batch, globalStep: this.#globalStep, acc: structuredClone(this.#acc), history: this.history }
  }

  /**
   * A resumed run finishes the interrupted epoch first. `loopEpochIsZero`: that loop is a run of one
   * epoch over the remaining data, numbered epoch 0 (fit on the remaining rows, fitDataset with the
   * remaining batchesPerEpoch); otherwise the loop numbers epochs absolutely (initialEpoch) and
   * only its batches restart at 0 (fitDataset skipping the trained batches).
   */
  resumeInsideEpoch(loopEpochIsZero: boolean): void {
    this.#batchOffset = this.#batch
    if (loopEpochIsZero) this.#epochOffset = this.#epoch
  }

  /** The partial-epoch loop is over: the next loop numbers epochs absolutely. */
  partialLoopDone(): void {
    this.#epochOffset = 0
  }

  /** The loop begins its epoch `loopEpoch`. */
  beginEpoch(loopEpoch: number): void {
    this.#epoch = loopEpoch + this.#epochOffset
    // A resumed partial epoch goes on from the sums it was saved with.
    if (this.#batchOffset === 0) this.#acc = noSums()
  }

  /** The loop's batch `loopBatch` has been applied; `logs` are its per-sample means over `size` samples. */
  endBatch(loopBatch: number, logs: Record<string, number>, size: number): void {
    for (const [k, v] of Object.entries(logs)) this.#acc.sums[k] = (this.#acc.sums[k] ?? 0) + v * size
    this.#acc.samples += size
    this.#batch = loopBatch + this.#batchOffset + 1
    this.#globalStep++
  }

  /**
   * The loop's epoch `loopEpoch` is over: its mean logs (plus the `val_*` entries of `logs`, which
   * are per epoch already) go into history, and the position moves to the next epoch's start.
   */
  endEpoch(loopEpoch: number, logs: Record<string, number>): { epoch: number; means: Record<string, number> } {
    const epoch = loopEpoch + this.#epochOffset
    const means: Record<string, number> = {}
    for (const [k, v] of Object.entries(this.#acc.sums)) means[k] = v / Math.max(1, this.#acc.samples)
    for (const [k, v] of Object.entries(logs)) if (k.startsWith('val_')) means[k] = v
    this.#history.epoch.push(epoch)
    for (const [k, v] of Object.entries(means)) (this.#history.history[k] ??= []).push(v)
    this.#epoch = epoch + 1
    this.#batch = 0
    this.#batchOffset = 0
    this.#acc = noSums()
    return { epoch, means }
  }
}
