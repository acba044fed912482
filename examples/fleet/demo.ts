// `npm run demo:fleet`: a fleet of 3 spot workers shares a BullMQ queue of 6 training jobs (the
// demo's MNIST model, different seeds and hyperparameters). Workers are preempted at random (SIGTERM
// notices and SIGKILLs without warning) and replaced; each job resumes on whichever worker picks it
// up next. Prints per job the preemptions survived, the work redone after each and the compute
// saved against restarting from zero, and draws the jobs moving between workers (SVG).
//
//   npm run demo:fleet                                 local Redis + the S3 test server on 127.0.0.1
//   npm run demo:fleet -- --backend local              checkpoints in a local directory instead
//   npm run demo:fleet -- --seed 7 --preemptions 8 --gap 3
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { figures, runsOf } from './analyze.js'
import { fleetEnvironment } from './environment.js'
import { jobMix } from './producer.js'
import { runScenario } from './scenario.js'
import { timelineSvg } from './timeline.js'

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 's3' },
    seed: { type: 'string', default: String(Math.floor(Math.random() * 1e6)) },
    preemptions: { type: 'string', default: '6' },
    gap: { type: 'string', default: '4' },
    'kill-share': { type: 'string', default: '0.3' },
    epochs: { type: 'string', default: '4' },
    out: { type: 'string', default: 'demo-out' },
  },
})
const say = (s: string): void => console.log(s)

async function main(): Promise<void> {
  const seed = Number(values.seed)
  const env = await fleetEnvironment(String(values.backend))
  try {
    const jobs = jobMix(6, { epochs: Number(values.epochs) })
    say(`taskpoint fleet demo: 3 workers, 6 MNIST training jobs on a BullMQ queue (real Redis on 127.0.0.1), checkpoints at ${env.checkpoint('')}`)
    say(
      `preempting busy workers at random: ${values.preemptions} times, ~${values.gap} s apart, ${Math.round(Number(values['kill-share']) * 100)} % without notice (seed ${seed})\n`,
    )
    const r = await runScenario({
      redisUrl: env.redisUrl,
      checkpoint: env.checkpoint(`demo-${seed}`),
      env: env.env,
      queue: `demo-${seed}`,
      jobs,
      workers: 3,
      meanGapSeconds: Number(values.gap),
      maxPreemptions: Number(values.preemptions),
      killShare: Number(values['kill-share']),
      seed,
      workerArgs: ['--lock-ms', '4000', '--stalled-ms', '2000', '--max-stalled', '20'],
      log: say,
    })
    const figs = figures(r.events)
    say(
      `\nall jobs finished in ${r.seconds.toFixed(1)} s: ${Object.entries(r.states)
        .map(([j, s]) => `${j} ${s}`)
        .join(', ')}\n`,
    )
    say('job     preemptions  work redone after each (batches)   batches trained   from zero would be   saved')
    let trained = 0
    let fromZero = 0
    for (const f of figs) {
      trained += f.trained
      fromZero += f.fromZero
      const saved = f.fromZero > 0 ? (1 - f.trained / f.fromZero) * 100 : 0
      say(
        `${f.job.padEnd(8)}${String(f.preemptions).padStart(11)}  ${(f.redone.join(', ') || '-').padEnd(34)}${String(f.trained).padStart(16)}${String(f.fromZero).padStart(21)}${`${saved.toFixed(0)} %`.padStart(8)}`,
      )
    }
    say(
      `total: ${trained} batches trained; restarting from zero after each preemption would have trained ${fromZero}: ${fromZero - trained} batches (${((1 - trained / Math.max(1, fromZero)) * 100).toFixed(0)} % of the compute) saved`,
    )
    const file = path.resolve(String(values.out), 'fleet.svg')
    mkdirSync(path.dirname(file), { recursive: true })
    writeFileSync(file, timelineSvg(runsOf(r.events), `6 jobs on 3 spot workers: ${r.preemptions.length} preemptions, every job resumed from its checkpoint`))
    say(`picture of the jobs moving between workers: ${file}`)
    if (Object.values(r.states).some((s) => s !== 'completed')) process.exitCode = 1
  } finally {
    await env.stop()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
