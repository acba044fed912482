import { describe, expect, it } from 'vitest'
import { TrainingPosition, type SavedPosition } from '../../integrations/tfjs/position.js'

// Batch logs of a made-up run: epoch e, batch b has loss e*10+b and size 4, except a last short batch of 2.
const BATCHES = 5
const size = (b: number): number => (b === BATCHES - 1 ? 2 : 4)
const logs = (e: number, b: number): Record<string, number> => ({ loss: e * 10 + b, acc: b / 10 })

/** The loop events of epochs [from, to) as a loop numbering epochs absolutely from batch 0. */
function train(p: TrainingPosition, from: number, to: number): void {
  for (let e = from; e < to; e++) {
    p.beginEpoch(e)
    for (let b = 0; b < BATCHES; b++) p.endBatch(b, logs(e, b), size(b))
    p.endEpoch(e, { val_loss: e, loss: 999 })
  }
}

/** A checkpoint's position after a JSON round trip, as a fresh process reads it. */
const reload = (p: TrainingPosition): TrainingPosition => new TrainingPosition(JSON.parse(JSON.stringify(p.snapshot())) as SavedPosition)

describe('TrainingPosition', () => {
  it('counts batches and steps, and records size-weighted epoch means and val_* logs in history', () => {
    const p = new TrainingPosition()
    p.beginEpoch(0)
    p.endBatch(0, { loss: 1 }, 2)
    expect([p.epoch, p.batch, p.globalStep]).toEqual([0, 1, 1])
    p.endBatch(1, { loss: 4 }, 1)
    expect([p.epoch, p.batch, p.globalStep]).toEqual([0, 2, 2])
    const ended = p.endEpoch(0, { val_loss: 0.5, loss: 123 })
    // (1*2 + 4*1) / 3; the epoch logs' own loss is not a mean over this epoch's batches.
    expect(ended).toEqual({ epoch: 0, means: { loss: 2, val_loss: 0.5 } })
    expect([p.epoch, p.batch, p.globalStep]).toEqual([1, 0, 2])
    expect(p.history).toEqual({ epoch: [0], history: { loss: [2], val_loss: [0.5] } })
    expect(p.lastLoss).toBe(2)
    // A new epoch starts its sums afresh.
    p.beginEpoch(1)
    p.endBatch(0, { loss: 10 }, 1)
    expect(p.endEpoch(1, {}).means).toEqual({ loss: 10 })
  })

  it('resumed inside an epoch by a one-epoch loop over the rest (fit): same history and steps as uninterrupted', () => {
    const ref = new TrainingPosition()
    train(ref, 0, 3)
    for (let cutAt = 1; cutAt < BATCHES; cutAt++) {
      const first = new TrainingPosition()
      train(first, 0, 1)
      first.beginEpoch(1)
      for (let b = 0; b < cutAt; b++) first.endBatch(b, logs(1, b), size(b))
      const p = reload(first)
      expect([p.epoch, p.batch]).toEqual([1, cutAt])
      p.resumeInsideEpoch(true)
      p.beginEpoch(0) // the loop's epoch 0 is epoch 1
      expect(p.epoch).toBe(1)
      for (let b = 0; b < BATCHES - cutAt; b++) {
        p.endBatch(b, logs(1, b + cutAt), size(b + cutAt))
        expect(p.batch).toBe(b + cutAt + 1)
      }
      expect(p.endEpoch(0, { val_loss: 1 }).epoch).toBe(1)
      p.partialLoopDone()
      train(p, p.epoch, 3) // then fit from initialEpoch, absolute numbers again
      expect(p.history).toEqual(ref.history)
      expect(p.globalStep).toBe(ref.globalStep)
    }
  })

  it('resumed inside an epoch by a loop with absolute epochs whose batches restart at 0 (fitDataset)', () => {
    const ref = new TrainingPosition()
    train(ref, 0, 3)
    const first = new TrainingPosition()
    train(first, 0, 2)
    first.beginEpoch(2)
    first.endBatch(0, logs(2, 0), size(0))
    first.endBatch(1, logs(2, 1), size(1))
    const p = reload(first)
    p.resumeInsideEpoch(false)
    p.beginEpoch(2)
    for (let b = 0; b < BATCHES - 2; b++) p.endBatch(b, logs(2, b + 2), size(b + 2))
    expect(p.batch).toBe(BATCHES)
    expect(p.endEpoch(2, { val_loss: 2 }).epoch).toBe(2)
    expect(p.history).toEqual(ref.history)
    expect([p.epoch, p.batch, p.globalStep]).toEqual([ref.epoch, 0, ref.globalStep])
  })

  it('hands out copies: a snapshot or history read earlier does not move with training', () => {
    const p = new TrainingPosition()
    train(p, 0, 1)
    p.beginEpoch(1)
    p.endBatch(0, { loss: 5 }, 4)
    const snap = p.snapshot()
    const before = JSON.stringify(snap)
    const history = p.history
    history.epoch.push(42)
    snap.acc.sums.loss = -1
    p.endBatch(1, { loss: 6 }, 4)
    p.endEpoch(1, {})
    expect(p.history.epoch).toEqual([0, 1])
    expect(snap.acc.sums.loss).toBe(-1)
    snap.acc.sums.loss = 20
    expect(JSON.stringify(snap)).toBe(before)
    // Epoch 0: (0*4 + 1*4 + 2*4 + 3*4 + 4*2) / 18; epoch 1: (5*4 + 6*4) / 8, untouched by the copies' edits.
    expect(p.history.history.loss).toEqual([32 / 18, 5.5])
  })
})
