// One fleet job: train the demo's MNIST model with the job's seed and hyperparameters, resuming
// from the job's checkpoints. Shared by the worker (under BullMQ) and by reference runs (plain
// task, no queue) so both run exactly the same code.
import type * as tfType from '@tensorflow/tfjs'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Checkpointer, RecoverableError, type TaskContext } from '../../src/index.js'
import { fitWithCheckpoints } from '../../integrations/tfjs/index.js'
import { buildModel, loadMnist, testAccuracy, weightsHash, type MnistData } from '../mnist-model.js'
import { emit } from './events.js'

type TF = typeof tfType

/** A training job's data (what the producer enqueues). */
export interface TrainJob {
  seed: number
  lr: number
  units: number
  epochs: number
  batchSize: number
  trainPerDigit: number
  testPerDigit: number
  /** Save every this many batches (and at epoch ends). */
  saveEveryBatches: number
  /** Extra time per batch, to stand in for a bigger model without burning CPU. Default 0. */
  stepMs?: number
  /** Fault injection: the first run with no failed attempt behind it throws a RecoverableError at this step. */
  failOnceAtStep?: number
  /** Fault injection: throws a plain Error (a bug) at this step: the job must fail at once. */
  failPermanentlyAtStep?: number
}

export interface TrainResult {
  weights: string
  testAccuracy: number
  history: { epoch: number[]; history: Record<string, number[]> }
  steps: number
  /** Step this run started from (0: from scratch). */
  resumedFrom: number
}

const datasets = new Map<string, MnistData>()

function dataFor(tf: TF, spec: Pick<TrainJob, 'trainPerDigit' | 'testPerDigit'>): MnistData {
  const key = `${spec.trainPerDigit}/${spec.testPerDigit}`
  let d = datasets.get(key)
  if (!d) datasets.set(key, (d = loadMnist(tf, spec.trainPerDigit, spec.testPerDigit)))
  return d
}

export interface RunInfo {
  job: string
  /** BullMQ's failed-attempt count for this run (0 for reference runs). */
  attemptsMade: number
  /**
   * Restart from zero (the benchmark's baseline): no periodic saves at all, and the one save a
   * preemption makes goes to a throwaway directory of this run, so no run ever resumes.
   */
  noCheckpoints?: boolean
}

/**
 * Loads a job mix's data before the worker takes its first job. Parsing MNIST is ~0.5 s of
 * synchronous work (several seconds on a loaded machine): done inside a job it blocks the event
 * loop while BullMQ holds the job's lock, the lock is not renewed in time, the stalled checker
 * hands the job to a second worker and the two runs race (the fenced one's work is thrown away).
 */
export function preloadData(tf: TF, spec: Pick<TrainJob, 'trainPerDigit' | 'testPerDigit'>): void {
  dataFor(tf, spec)
}

/** Whether a job with this spec finds its data already loaded (no synchronous parse under its lock). */
export function hasData(spec: Pick<TrainJob, 'trainPerDigit' | 'testPerDigit'>): boolean {
  return datasets.has(`${spec.trainPerDigit}/${spec.testPerDigit}`)
}

/** Trains one job inside a task context (its checkpoint, signal and preemption hooks). */
export async function trainJob(tf: TF, spec: TrainJob, ctx: Pick<TaskContext, 'checkpoint' | 'signal'>, info: RunInfo): Promise<TrainResult> {
  const data = dataFor(tf, spec)
  // Seeds Math.random and builds a fresh model: a worker runs many jobs, one after the other.
  const model = buildModel(tf, { seed: spec.seed, units: spec.units, lr: spec.lr })
  let scratch: string | undefined
  let cp = ctx.checkpoint
  if (info.noCheckpoints) {
    scratch = mkdtempSync(path.join(tmpdir(), 'fleet-nockpt-'))
    cp = await Checkpointer.open(scratch)
  }
  let resumedFrom = 0
  try {
    const r = await fitWithCheckpoints(
      tf,
      model,
      data.train.x,
      data.train.y,
      { epochs: spec.epochs, batchSize: spec.batchSize, shuffle: true, verbose: 0 },
      {
        checkpoint: cp,
        signal: ctx.signal,
        // The baseline saves nothing on its way (an epoch count no run reaches turns epoch-end saves off).
        every: info.noCheckpoints ? { epochs: Number.MAX_SAFE_INTEGER } : { batches: spec.saveEveryBatches },
        metadata: { seed: spec.seed, lr: spec.lr, units: spec.units },
        onResume: (f) => {
          resumedFrom = f.step
          emit({ ev: 'resume', job: info.job, step: f.step })
        },
        onSave: (s) => emit({ ev: 'save', job: info.job, step: s.step, kind: s.kind }),
        onBatch: async ({ step }) => {
          emit({ ev: 'step', job: info.job, step })
          if (spec.failOnceAtStep === step && info.attemptsMade === 0) throw new RecoverableError(`injected recoverable fault at step ${step}`)
          if (spec.failPermanentlyAtStep === step) throw new TypeError(`injected bug at step ${step}`)
          if (spec.stepMs) await new Promise((r) => setTimeout(r, spec.stepMs))
        },
      },
    )
    return { weights: weightsHash(model), testAccuracy: testAccuracy(tf, model, data), history: r.history, steps: r.trainedBatches + resumedFrom, resumedFrom }
  } finally {
    model.dispose()
    if (scratch) {
      await cp.close().catch(() => {})
      rmSync(scratch, { recursive: true, force: true })
    }
  }
}
