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

/** Where a fleet's time and work went in one run: the benchmark prints these beside jobs/hour. */
export interface FleetStats {
  sigterms: number
  sigkills: number
  /** Batches trained by all runs, and how many of them were trained again (a job's batches past its own length). */
  batches: number
  redone: number
  /** Runs started that resumed from a checkpoint. */
  resumed: number
  /** A job started while another run of it was still alive: its lock had lapsed under a live worker. */
  doubleRuns: number
  /** Runs that found a newer run had claimed their job's checkpoints (fenced) and let go. */
  superseded: number
  /** More completions than jobs: a duplicate run finished too (no fencing without checkpoints). */
  extraCompletions: number
  /** Summed over runs, in seconds: training batches, the pause a save adds to its batch, job start to first batch (data, model, restore), SIGTERM to exit (final save, requeue). */
  trainS: number
  saveS: number
  startS: number
  termS: number
}

export function fleetStats(events: Event[], jobLengths: Record<string, number>): FleetStats {
  const st: FleetStats = {
    sigterms: 0,
    sigkills: 0,
    batches: 0,
    redone: 0,
    resumed: 0,
    doubleRuns: 0,
    superseded: 0,
    extraCompletions: 0,
    trainS: 0,
    saveS: 0,
    startS: 0,
    termS: 0,
  }
  const jobOf = new Map<string, string>() // worker → job it runs
  const alive = new Map<string, number>() // job → live runs
  const lastStep = new Map<string, number>() // worker → time of its last batch (or job start)
  const firstPending = new Set<string>() // workers whose run has not trained a batch yet
  const afterSave = new Set<string>()
  const normalGaps: number[] = []
  const saveGaps: number[] = []
  const termAt = new Map<string, number>()
  const perJob = new Map<string, number>()
  let completions = 0
  const end = (w: string): void => {
    const j = jobOf.get(w)
    if (j !== undefined) alive.set(j, (alive.get(j) ?? 1) - 1)
    jobOf.delete(w)
  }
  for (const e of events) {
    const w = e.worker
    switch (e.ev) {
      case 'kill':
        if (e.signal === 'SIGKILL') st.sigkills++
        else if (e.signal === 'SIGTERM') {
          st.sigterms++
          termAt.set(w, e.t)
        }
        break
      case 'start':
        if ((alive.get(e.job!) ?? 0) > 0) st.doubleRuns++
        alive.set(e.job!, (alive.get(e.job!) ?? 0) + 1)
        jobOf.set(w, e.job!)
        lastStep.set(w, e.t)
        firstPending.add(w)
        afterSave.delete(w)
        break
      case 'resume':
        st.resumed++
        break
      case 'save':
        afterSave.add(w)
        break
      case 'step': {
        st.batches++
        perJob.set(e.job!, (perJob.get(e.job!) ?? 0) + 1)
        const gap = e.t - (lastStep.get(w) ?? e.t)
        if (firstPending.delete(w)) st.startS += gap / 1000
        else (afterSave.delete(w) ? saveGaps : normalGaps).push(gap)
        lastStep.set(w, e.t)
        break
      }
      case 'outcome':
        if (e.outcome === 'superseded') st.superseded++
        if (e.outcome === 'completed') completions++
        end(w)
        break
      case 'exit':
        if (termAt.has(w)) st.termS += (e.t - termAt.get(w)!) / 1000
        end(w)
        break
    }
  }
  // A save's cost to training: what a batch followed by a save takes beyond a typical batch.
  const typical = [...normalGaps].sort((a, b) => a - b)[normalGaps.length >> 1] ?? 0
  st.trainS = (normalGaps.reduce((a, b) => a + b, 0) + typical * saveGaps.length) / 1000
  st.saveS = saveGaps.reduce((a, b) => a + Math.max(0, b - typical), 0) / 1000
  st.redone = [...perJob].reduce((a, [j, n]) => a + Math.max(0, n - (jobLengths[j] ?? n)), 0)
  st.extraCompletions = Math.max(0, completions - Object.keys(jobLengths).length)
  return st
}
