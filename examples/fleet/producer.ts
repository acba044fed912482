// Enqueues a few training jobs (the demo's MNIST model with different seeds and hyperparameters)
// and, with --wait, waits for them and prints each result.
//
//   node dist/examples/fleet/producer.js --redis redis://127.0.0.1:6379 --jobs 6 --wait
import { Queue, QueueEvents } from 'bullmq'
import { parseArgs } from 'node:util'
import type { TrainJob } from './job.js'

/** The fleet's job mix: seeds and learning rates vary, the rest is the demo's model. */
export function jobMix(n: number, base: Partial<TrainJob> = {}): TrainJob[] {
  const lrs = [0.001, 0.002, 0.0005]
  const units = [128, 64, 96]
  return Array.from({ length: n }, (_, i) => ({
    seed: 1000 + i,
    lr: lrs[i % lrs.length]!,
    units: units[i % units.length]!,
    epochs: 4,
    batchSize: 64,
    trainPerDigit: 400,
    testPerDigit: 100,
    saveEveryBatches: 8,
    ...base,
  }))
}

/** Job options every training job gets: retries for real failures only, kept for inspection. */
export const JOB_OPTIONS = { attempts: 3, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: false, removeOnFail: false } as const

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      queue: { type: 'string', default: 'training' },
      redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
      jobs: { type: 'string', default: '6' },
      epochs: { type: 'string', default: '4' },
      wait: { type: 'boolean', default: false },
    },
  })
  const url = new URL(values.redis!)
  const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null }
  const queue = new Queue<TrainJob>(values.queue!, { connection })
  const events = new QueueEvents(values.queue!, { connection })
  await events.waitUntilReady()
  const jobs = await queue.addBulk(
    jobMix(Number(values.jobs), { epochs: Number(values.epochs) }).map((data, i) => ({ name: `mnist-${i}`, data, opts: { ...JOB_OPTIONS, jobId: `mnist-${data.seed}` } })),
  )
  console.log(`enqueued ${jobs.map((j) => j.id).join(', ')}`)
  if (values.wait) {
    for (const j of jobs) {
      try {
        const r = (await j.waitUntilFinished(events)) as { testAccuracy: number; weights: string }
        console.log(`${j.id}: test accuracy ${r.testAccuracy.toFixed(4)}, weights ${r.weights.slice(0, 12)}…`)
      } catch (e) {
        console.log(`${j.id}: failed: ${(e as Error).message}`)
      }
    }
  }
  await events.close()
  await queue.close()
}
