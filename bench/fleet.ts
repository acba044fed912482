// Fleet throughput under preemption: the same 3-worker fleet and the same 6 jobs, once with
// taskpoint checkpoints and once restarting each job from zero after a preemption (no saves on the
// way, nothing shared), side by side in one run, repeated; prints jobs/hour for both with min–max.
//
// Fairness: both fleets face the same seeded preemption process *per unit of work* (a preemption
// every `--every` batches trained across the fleet on average, a fresh worker replacing each
// victim), not per second: on a shared machine a run slowed down by other load would otherwise be
// preempted more often and the comparison would measure the load. Each repetition runs both
// variants with the same seed, in alternating order. Jobs/hour is wall-clock.
//
//   npm run bench:fleet -- --every 250 --kill-share 0.3 --reps 3
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { descendantsCpuSeconds } from './cpu.js'
import { fleetStats, type FleetStats } from '../examples/fleet/analyze.js'
import { fleetEnvironment } from '../examples/fleet/environment.js'
import { jobMix } from '../examples/fleet/producer.js'
import { runScenario } from '../examples/fleet/scenario.js'

const { values } = parseArgs({
  options: {
    every: { type: 'string', default: '250' },
    'kill-share': { type: 'string', default: '0.3' },
    epochs: { type: 'string', default: '4' },
    // Batches between saves (epoch ends are save points too). 0: the job mix's own (8).
    'save-every': { type: 'string', default: '0' },
    jobs: { type: 'string', default: '6' },
    workers: { type: 'string', default: '3' },
    reps: { type: 'string', default: '3' },
    seed: { type: 'string', default: '2026' },
    backend: { type: 'string', default: 's3' },
    // BullMQ lock and stalled-check periods: short, so that a SIGKILLed worker's job is recovered
    // in seconds as the jobs here are short (BullMQ's defaults are 30 s each).
    'lock-ms': { type: 'string', default: '4000' },
    'stalled-ms': { type: 'string', default: '2000' },
    // 'none' reproduces the lapsed locks of the first measurement (data loaded inside the first job).
    preload: { type: 'string', default: '400/100' },
    verbose: { type: 'boolean', default: false },
  },
})
const every = Number(values.every)
const killShare = Number(values['kill-share'])
const reps = Number(values.reps)
const workers = Number(values.workers)
const saveEvery = Number(values['save-every'])
const jobs = jobMix(Number(values.jobs), { epochs: Number(values.epochs), ...(saveEvery > 0 ? { saveEveryBatches: saveEvery } : {}) })
// Batches a job trains when nothing interrupts it (fit's last batch of an epoch may be partial).
const jobLength = (j: (typeof jobs)[number]): number => j.epochs * Math.ceil((j.trainPerDigit * 10) / j.batchSize)
const lengths = Object.fromEntries(jobs.map((j, i) => [`job-${i}`, jobLength(j)]))

interface Row extends FleetStats {
  variant: 'ckpt' | 'zero'
  rep: number
  completed: number
  seconds: number
  perHour: number
  stalled: number
  /** CPU seconds of the workers, Redis and the S3 server during the run, per completed job. */
  cpuPerJob: number | undefined
}

const NAMES = { ckpt: 'taskpoint checkpoints', zero: 'restart from zero' } as const
const rows: Row[] = []
const env = await fleetEnvironment(String(values.backend))
const say = (s: string): void => console.log(s)
const condition = every > 0 ? `a preemption per ${every} fleet batches (${Math.round(killShare * 100)} % SIGKILL)` : 'no preemptions'
say(
  `fleet of ${workers} workers, ${jobs.length} jobs of ${jobLength(jobs[0]!)} batches saving every ${jobs[0]!.saveEveryBatches}, ${condition} on average, ${reps} repetitions, checkpoints at ${env.checkpoint('')}`,
)
try {
  for (let rep = 0; rep < reps; rep++) {
    const seed = Number(values.seed) + rep
    const order: ('ckpt' | 'zero')[] = rep % 2 === 0 ? ['ckpt', 'zero'] : ['zero', 'ckpt']
    for (const variant of order) {
      const tag = `bench-${variant}-${seed}-${Date.now()}`
      // Workers killed without notice cannot remove their own scratch directories: give them one to share.
      const scratch = mkdtempSync(path.join(tmpdir(), 'fleet-bench-'))
      const cpu0 = descendantsCpuSeconds()
      const r = await runScenario({
        redisUrl: env.redisUrl,
        checkpoint: env.checkpoint(tag),
        env: { ...env.env, TMPDIR: scratch },
        queue: tag,
        jobs,
        workers,
        meanGapSeconds: 0,
        // --every 0: no preemptions (the cost of checkpointing alone).
        meanGapBatches: every > 0 ? every : 1,
        maxPreemptions: every > 0 ? Number.MAX_SAFE_INTEGER : 0,
        killShare,
        seed,
        noCheckpoints: variant === 'zero',
        workerArgs: ['--lock-ms', String(values['lock-ms']), '--stalled-ms', String(values['stalled-ms']), '--max-stalled', '1000', '--preload', String(values.preload)],
        timeoutMs: 10 * 60_000,
        ...(values.verbose ? { log: say } : {}),
      })
      const cpu1 = descendantsCpuSeconds()
      rmSync(scratch, { recursive: true, force: true })
      const completed = Object.values(r.states).filter((s) => s === 'completed').length
      const cpuPerJob = cpu0 !== undefined && cpu1 !== undefined && completed > 0 ? (cpu1 - cpu0) / completed : undefined
      const st = fleetStats(r.events, lengths)
      const row: Row = { ...st, variant, rep, completed, seconds: r.seconds, perHour: (completed / r.seconds) * 3600, stalled: r.stalled.length, cpuPerJob }
      rows.push(row)
      say(
        `rep ${rep + 1} ${NAMES[variant].padEnd(21)} ${completed}/${jobs.length} jobs in ${r.seconds.toFixed(1)} s → ${row.perHour.toFixed(0)} jobs/hour | ` +
          `${st.sigterms} SIGTERM + ${st.sigkills} SIGKILL, ${st.batches} batches (${st.redone} redone), ${st.resumed} resumed, ${row.stalled} stalled, ` +
          `${st.doubleRuns} double runs, ${st.superseded} superseded, ${st.extraCompletions} extra completions | ` +
          `CPU ${cpuPerJob?.toFixed(1) ?? '?'} s/job, train ${st.trainS.toFixed(1)} s, save pauses ${st.saveS.toFixed(1)} s, job start→first batch ${st.startS.toFixed(1)} s, SIGTERM→exit ${st.termS.toFixed(1)} s`,
      )
    }
  }
} finally {
  await env.stop()
}

const range = (xs: number[], digits = 0): string => {
  const lo = Math.min(...xs).toFixed(digits)
  const hi = Math.max(...xs).toFixed(digits)
  return lo === hi ? lo : `${lo}–${hi}`
}
const of = (v: 'ckpt' | 'zero'): Row[] => rows.filter((r) => r.variant === v)
say(
  `\n| ${workers} workers, ${jobs.length} jobs × ${jobLength(jobs[0]!)} batches, save every ${jobs[0]!.saveEveryBatches}, ${condition}, min–max of ${reps} | jobs/hour | wall s | CPU s per job | preemptions | batches trained | double runs | save pauses s |`,
)
say('|---|---|---|---|---|---|---|---|')
for (const v of ['ckpt', 'zero'] as const) {
  const rs = of(v)
  say(
    `| ${NAMES[v]} | ${range(rs.map((r) => r.perHour))} | ${range(
      rs.map((r) => r.seconds),
      1,
    )} | ${
      rs.every((r) => r.cpuPerJob !== undefined)
        ? range(
            rs.map((r) => r.cpuPerJob!),
            1,
          )
        : '?'
    } | ${range(rs.map((r) => r.sigterms + r.sigkills))} | ${range(rs.map((r) => r.batches))} | ${range(rs.map((r) => r.doubleRuns))} | ${range(
      rs.map((r) => r.saveS),
      1,
    )} |`,
  )
}
const ratios = of('ckpt').map((c) => c.perHour / Math.max(1e-9, of('zero').find((z) => z.rep === c.rep)!.perHour))
say(`| checkpoints ÷ zero, same repetition | ${range(ratios, 2)}× | | | | | | |`)
if (rows.some((r) => r.completed < jobs.length)) {
  say('\nsome runs did not complete every job within 10 minutes: their jobs/hour counts only the completed ones')
  process.exitCode = 1
}
