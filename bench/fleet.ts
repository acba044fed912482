// Fleet throughput under preemption: the same 3-worker fleet, the same 6 jobs and the same seeded
// preemption process, once with taskpoint checkpoints and once restarting each job from zero after
// a preemption (the job's checkpoints go to a throwaway directory). Both measured in this run, one
// after the other. Prints jobs/hour for each and the ratio.
//
//   npm run bench:fleet -- --gap 3 --kill-share 0.3 --epochs 4
import { parseArgs } from 'node:util'
import { fleetEnvironment } from '../examples/fleet/demo.js'
import { jobMix } from '../examples/fleet/producer.js'
import { runScenario } from '../examples/fleet/scenario.js'

const { values } = parseArgs({
  options: {
    gap: { type: 'string', default: '3' },
    'kill-share': { type: 'string', default: '0.3' },
    epochs: { type: 'string', default: '4' },
    jobs: { type: 'string', default: '6' },
    seed: { type: 'string', default: '2026' },
    backend: { type: 'string', default: 's3' },
  },
})
const env = await fleetEnvironment(String(values.backend))
const rows: { name: string; jobs: number; seconds: number; preemptions: number; perHour: number }[] = []
try {
  for (const noCheckpoints of [false, true]) {
    const name = noCheckpoints ? 'restart from zero' : 'taskpoint checkpoints'
    const r = await runScenario({
      redisUrl: env.redisUrl,
      checkpoint: env.checkpoint(`bench-${noCheckpoints ? 'zero' : 'ckpt'}-${Date.now()}`),
      env: env.env,
      queue: `bench-${noCheckpoints ? 'zero' : 'ckpt'}`,
      jobs: jobMix(Number(values.jobs), { epochs: Number(values.epochs) }),
      workers: 3,
      meanGapSeconds: Number(values.gap),
      // Preempt for as long as the run lasts: the rate, not a count, is the condition.
      maxPreemptions: Number.MAX_SAFE_INTEGER,
      killShare: Number(values['kill-share']),
      seed: Number(values.seed),
      noCheckpoints,
      workerArgs: ['--lock-ms', '4000', '--stalled-ms', '2000', '--max-stalled', '1000'],
      timeoutMs: 15 * 60_000,
    })
    const completed = Object.values(r.states).filter((s) => s === 'completed').length
    rows.push({ name, jobs: completed, seconds: r.seconds, preemptions: r.preemptions.length, perHour: (completed / r.seconds) * 3600 })
    console.log(`${name}: ${completed} jobs in ${r.seconds.toFixed(1)} s under ${r.preemptions.length} preemptions → ${((completed / r.seconds) * 3600).toFixed(0)} jobs/hour`)
  }
} finally {
  await env.stop()
}
const [ck, zero] = rows
console.log(`\n| fleet of 3 workers, ${values.jobs} jobs, a preemption every ~${values.gap} s (${Math.round(Number(values['kill-share']) * 100)} % SIGKILL) | jobs/hour | preemptions |`)
console.log('|---|---|---|')
for (const r of rows) console.log(`| ${r.name} | ${r.perHour.toFixed(0)} | ${r.preemptions} |`)
console.log(`| ratio | ${(ck!.perHour / Math.max(1e-9, zero!.perHour)).toFixed(2)}× | |`)
