// Turns a fleet's event log into runs (one job on one worker from start to end) and per-job
// figures: preemptions survived, work redone after each, compute saved against restarting from zero.
import type { Event } from './fleet.js'

export interface Run {
  job: string
  worker: string
  start: number
  end: number
  /** completed, preempted (SIGTERM: saved and requeued), killed (SIGKILL), failed, superseded… */
  how: string
  fromStep: number
  reachedStep: number
}

export interface JobFigures {
  job: string
  runs: Run[]
  preemptions: number
  /** Per preemption: batches between the checkpoint the next run resumed from and where this run had got to. */
  redone: number[]
  /** Batches trained in all (every run), and what restarting from zero after each preemption would have cost. */
  trained: number
  fromZero: number
  finalSteps: number
}

export function runsOf(events: Event[]): Run[] {
  const open = new Map<string, Run>() // by worker
  const runs: Run[] = []
  const close = (worker: string, t: number, how: string): void => {
    const r = open.get(worker)
    if (!r) return
    r.end = t
    r.how = how
    runs.push(r)
    open.delete(worker)
  }
  for (const e of events) {
    if (e.ev === 'start') open.set(e.worker, { job: e.job!, worker: e.worker, start: e.t, end: e.t, how: 'running', fromStep: 0, reachedStep: 0 })
    const r = open.get(e.worker)
    if (e.ev === 'resume' && r) r.fromStep = r.reachedStep = e.step!
    if (e.ev === 'step' && r) r.reachedStep = Math.max(r.reachedStep, e.step!)
    if (e.ev === 'outcome') close(e.worker, e.t, String(e.outcome))
    if (e.ev === 'exit') close(e.worker, e.t, e.signal === 'SIGKILL' ? 'killed' : 'preempted')
  }
  return runs.sort((a, b) => a.start - b.start)
}

export function figures(events: Event[]): JobFigures[] {
  const runs = runsOf(events)
  const jobs = [...new Set(runs.map((r) => r.job))].sort()
  return jobs.map((job) => {
    const rs = runs.filter((r) => r.job === job)
    const redone: number[] = []
    let fromZero = 0
    for (const [i, r] of rs.entries()) {
      if (r.how !== 'preempted' && r.how !== 'killed') continue
      const next = rs[i + 1]
      redone.push(Math.max(0, r.reachedStep - (next?.fromStep ?? 0)))
      // Without checkpoints every batch this job had reached would be trained again.
      fromZero += r.reachedStep
    }
    const trained = rs.reduce((s, r) => s + (r.reachedStep - r.fromStep), 0)
    const finalSteps = Math.max(0, ...rs.map((r) => r.reachedStep))
    return { job, runs: rs, preemptions: redone.length, redone, trained, fromZero: finalSteps + fromZero, finalSteps }
  })
}
