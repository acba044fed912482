// One fleet run under a seeded preemption process, for the demo and the benchmark: start the
// workers, enqueue the jobs, preempt busy workers at random (exponential gaps, SIGTERM with notice
// or SIGKILL without), replace them, and wait until every job is completed or failed.
import { Queue, QueueEvents } from 'bullmq'
import { PreemptionPlan } from './chaos.js'
import { Fleet, waitForJobs, type Event } from './fleet.js'
import type { TrainJob } from './job.js'
import { JOB_OPTIONS } from './producer.js'

export interface ScenarioOptions {
  redisUrl: string
  checkpoint: string
  env?: Record<string, string>
  queue: string
  jobs: TrainJob[]
  workers: number
  /** Mean seconds between preemptions across the fleet (each hits one busy worker). */
  meanGapSeconds: number
  /**
   * Instead of seconds: mean batches trained by the whole fleet between preemptions. The same
   * seed then gives the same preemption process per unit of work whatever the machine's load, so
   * two fleets compared on a shared machine face the same odds (a slowed-down run is not
   * preempted more). Default: off (wall-clock gaps).
   */
  meanGapBatches?: number
  /** Stop preempting after this many. */
  maxPreemptions: number
  /** Share of preemptions that come without notice (SIGKILL). */
  killShare: number
  seed: number
  noCheckpoints?: boolean
  workerArgs?: string[]
  log?: (line: string) => void
  /** Every line a worker writes that is not an event (its warnings and log lines). */
  onLine?: (worker: string, line: string) => void
  /** Give up (the no-checkpoint fleet may never finish under heavy preemption). */
  timeoutMs?: number
}

export interface ScenarioResult {
  events: Event[]
  seconds: number
  states: Record<string, string>
  preemptions: { worker: string; signal: string; at: number }[]
  /** Jobs BullMQ's stalled checker moved back to wait (a SIGKILLed worker, or a lock that lapsed). */
  stalled: { job: string; at: number }[]
}

export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const byWork = o.meanGapBatches !== undefined
  const plan = new PreemptionPlan(o.seed, byWork ? o.meanGapBatches! : o.meanGapSeconds * 1000, o.killShare)
  const url = new URL(o.redisUrl)
  const queue = new Queue<TrainJob>(o.queue, { connection: { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null } })
  const busy = new Map<string, string>() // worker → job
  const signalled = new Set<string>() // a worker already told to go is not a candidate again
  const preemptions: ScenarioResult['preemptions'] = []
  let done = false
  const preemptOne = (): void => {
    const { victim, signal } = plan.pick([...busy.keys()].filter((w) => !signalled.has(w)))
    if (done || victim === undefined || preemptions.length >= o.maxPreemptions) return
    if (fleet.kill(victim, signal)) {
      signalled.add(victim)
      preemptions.push({ worker: victim, signal, at: Date.now() })
    }
  }
  let batches = 0
  let nextAt = byWork ? plan.gap() : Infinity
  const fleet = new Fleet({
    workers: o.workers,
    redisUrl: o.redisUrl,
    checkpoint: o.checkpoint,
    queue: o.queue,
    env: o.env ?? {},
    args: [...(o.workerArgs ?? []), ...(o.noCheckpoints ? ['--no-checkpoints'] : [])],
    ...(o.onLine ? { onLine: o.onLine } : {}),
    onEvent: (e) => {
      if (e.ev === 'start') busy.set(e.worker, e.job!)
      if (e.ev === 'outcome' || e.ev === 'exit') busy.delete(e.worker)
      if (e.ev === 'step' && byWork && ++batches >= nextAt) {
        nextAt = batches + plan.gap()
        preemptOne()
      }
      if (o.log && ['start', 'resume', 'outcome', 'exit', 'kill'].includes(e.ev)) o.log(describe(e))
    },
  })
  const stalled: ScenarioResult['stalled'] = []
  const queueEvents = new QueueEvents(o.queue, { connection: { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null } })
  queueEvents.on('stalled', ({ jobId }) => stalled.push({ job: jobId, at: Date.now() }))
  await queueEvents.waitUntilReady()
  const started = Date.now()
  fleet.start()
  const ids = o.jobs.map((_, i) => `job-${i}`)
  await queue.addBulk(o.jobs.map((data, i) => ({ name: ids[i]!, data, opts: { ...JOB_OPTIONS, jobId: ids[i]! } })))
  const chaos = (async () => {
    if (byWork) return
    while (!done && preemptions.length < o.maxPreemptions) {
      await new Promise((r) => setTimeout(r, plan.gap()))
      preemptOne()
    }
  })()
  try {
    const states = await waitForJobs(queue, ids, o.timeoutMs ?? 30 * 60_000).catch(async (e: Error) => {
      o.log?.(`  ${e.message}`)
      const st: Record<string, string> = {}
      for (const id of ids) st[id] = (await (await queue.getJob(id))?.getState()) ?? 'missing'
      return st
    })
    const seconds = (Date.now() - started) / 1000
    return { events: fleet.events, seconds, states, preemptions, stalled }
  } finally {
    done = true
    await fleet.stop()
    await chaos
    await queueEvents.close()
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close()
  }
}

function describe(e: Event): string {
  switch (e.ev) {
    case 'start':
      return `  ${e.worker}: picks up ${e.job} (failed attempts so far ${e.attemptsMade})`
    case 'resume':
      return `  ${e.worker}: ${e.job} resumes from its checkpoint at batch ${e.step}`
    case 'outcome':
      return `  ${e.worker}: ${e.job} ${e.outcome}${e.outcome === 'preempted' ? ' (final save done, back in the queue, no attempt spent)' : ''}`
    case 'kill':
      return `>>> ${e.signal === 'SIGKILL' ? 'SIGKILL (no notice)' : 'SIGTERM (spot notice)'} to ${e.worker}`
    case 'exit':
      return `  ${e.worker}: exited (${e.signal ?? `code ${e.code}`}); a new worker takes its place`
    default:
      return `  ${JSON.stringify(e)}`
  }
}
