// A fleet worker: takes training jobs from a BullMQ queue and runs each checkpointed, so that a
// job preempted here resumes on whichever worker picks it up next. Start as many as you like, on
// as many machines as you like; they share nothing but Redis and the checkpoint bucket.
//
//   node dist/examples/fleet/worker.js --redis redis://10.0.0.5:6379 --checkpoint s3://my-bucket/fleet
//
// SIGTERM (or a spot notice with TASKPOINT_WATCH_AWS_SPOT=1 / _GCE / _AZURE): the running job saves
// and goes back to the queue without spending an attempt; the worker closes and exits with 143.
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { runFleetWorker } from '../../integrations/bullmq/index.js'
import { emit, setWorkerName } from './events.js'
import { hasData, preloadData, trainJob, type TrainJob, type TrainResult } from './job.js'

const { values } = parseArgs({
  options: {
    queue: { type: 'string', default: 'training' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    checkpoint: { type: 'string' },
    name: { type: 'string', default: `worker-${process.pid}` },
    // BullMQ's lock and stalled-check periods (defaults 30 s each); shorter means a SIGKILLed
    // worker's job is noticed sooner, at the cost of more Redis traffic.
    'lock-ms': { type: 'string', default: '30000' },
    'stalled-ms': { type: 'string', default: '30000' },
    'max-stalled': { type: 'string', default: '10' },
    'grace-ms': { type: 'string', default: '25000' },
    // Restart from zero (the benchmark's baseline): nothing is saved on the way and nothing is
    // shared; checkpoint calls go to a directory of this process, removed when it exits.
    'no-checkpoints': { type: 'boolean', default: false },
    // MNIST split (train/test images per digit) to load before taking jobs ('none': load in the
    // first job). Default: the producer's job mix.
    preload: { type: 'string', default: '400/100' },
    // What to keep of a completed job's checkpoints: final (default), keep, delete.
    'on-completed': { type: 'string', default: 'final' },
  },
})
if (!values.checkpoint) {
  console.error('fleet worker: --checkpoint BASE is required (s3://bucket/prefix, gs://…, or a directory the workers share)')
  process.exit(2)
}
setWorkerName(values.name!)
const url = new URL(values.redis!)
await tf.setBackend('wasm')
await tf.ready()
if (values.preload !== 'none') {
  const m = /^(\d+)\/(\d+)$/.exec(values.preload!)
  if (!m) {
    console.error(`fleet worker: --preload must be TRAIN/TEST images per digit (e.g. 400/100) or none, got ${values.preload}`)
    process.exit(2)
  }
  // Before the worker exists, so no job's lock is held while this blocks the event loop.
  preloadData(tf, { trainPerDigit: Number(m[1]), testPerDigit: Number(m[2]) })
}
let checkpointBase = values.checkpoint
if (values['no-checkpoints']) {
  checkpointBase = mkdtempSync(path.join(tmpdir(), 'fleet-zero-'))
  process.once('exit', () => rmSync(checkpointBase!, { recursive: true, force: true }))
}

const fleet = runFleetWorker<TrainJob, TrainResult>(
  async (job, ctx) => {
    emit({ ev: 'start', job: job.id!, attemptsMade: job.attemptsMade, attemptsStarted: job.attemptsStarted, writer: ctx.checkpoint.writerId, dataReady: hasData(job.data) })
    const r = await trainJob(tf, job.data, ctx, { job: job.id!, attemptsMade: job.attemptsMade, noCheckpoints: values['no-checkpoints'] })
    ctx.progress({ step: r.steps })
    return r
  },
  {
    queue: values.queue!,
    connection: { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null },
    checkpoint: checkpointBase!,
    graceMs: Number(values['grace-ms']),
    onCompleted: values['on-completed'] as 'final' | 'keep' | 'delete',
    worker: {
      concurrency: 1, // tfjs jobs share one seeded Math.random per process
      lockDuration: Number(values['lock-ms']),
      stalledInterval: Number(values['stalled-ms']),
      maxStalledCount: Number(values['max-stalled']),
      name: values.name!,
    },
    onOutcome: (job, outcome, error) => emit({ ev: 'outcome', job: job.id!, outcome, ...(error ? { error: (error as Error).message } : {}) }),
  },
)
fleet.worker.on('ready', () => emit({ ev: 'ready' }))
fleet.watcher.onPreempt((reason) => emit({ ev: 'preempted', reason }))
emit({ ev: 'up', pid: process.pid })
await fleet.done
