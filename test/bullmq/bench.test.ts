// The fleet benchmark's own pieces: the seeded preemption plan both fleets share, and the counts it
// prints beside jobs/hour (double runs, superseded runs, redone batches, save pauses), checked on
// hand-written event logs whose right answer is known.
import { describe, expect, it } from 'vitest'
import { fleetStats } from '../../examples/fleet/analyze.js'
import { PreemptionPlan } from '../../examples/fleet/chaos.js'
import type { Event } from '../../examples/fleet/fleet.js'

describe('the preemption plan', () => {
  it('gives two fleets the same gaps and signals from one seed, whatever their busy workers', () => {
    const a = new PreemptionPlan(7, 250, 0.3)
    const b = new PreemptionPlan(7, 250, 0.3)
    const sa: string[] = []
    const sb: string[] = []
    for (let i = 0; i < 200; i++) {
      expect(a.gap()).toBe(b.gap())
      // Fleet a always has three busy workers; fleet b sometimes none, sometimes others.
      const pa = a.pick(['w1.1', 'w2.1', 'w3.1'])
      const pb = b.pick(i % 3 === 0 ? [] : ['w9.4', 'w8.2'])
      sa.push(pa.signal)
      sb.push(pb.signal)
      expect(['w1.1', 'w2.1', 'w3.1']).toContain(pa.victim)
      if (i % 3 === 0) expect(pb.victim).toBeUndefined()
      else expect(['w9.4', 'w8.2']).toContain(pb.victim)
    }
    expect(sa).toEqual(sb)
    // The share of SIGKILLs follows killShare (200 draws: well within 0.15..0.45 for 0.3).
    const kills = sa.filter((s) => s === 'SIGKILL').length / sa.length
    expect(kills).toBeGreaterThan(0.15)
    expect(kills).toBeLessThan(0.45)
    // Another seed, another sequence.
    const c = new PreemptionPlan(8, 250, 0.3)
    expect(Array.from({ length: 5 }, () => c.gap())).not.toEqual(Array.from({ length: 5 }, () => new PreemptionPlan(7, 250, 0.3).gap()))
  })

  it('draws exponential gaps around the mean, and picks by sorted name (the order workers were listed in does not matter)', () => {
    const p = new PreemptionPlan(1, 100, 0)
    const gaps = Array.from({ length: 4000 }, () => p.gap())
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0)
    const mean = gaps.reduce((x, y) => x + y, 0) / gaps.length
    expect(mean).toBeGreaterThan(90)
    expect(mean).toBeLessThan(110)
    const x = new PreemptionPlan(3, 10, 0)
    const y = new PreemptionPlan(3, 10, 0)
    for (let i = 0; i < 50; i++) expect(x.pick(['c', 'a', 'b']).victim).toBe(y.pick(['b', 'c', 'a']).victim)
    expect(new PreemptionPlan(3, 10, 1).pick(['a']).signal).toBe('SIGKILL')
    expect(new PreemptionPlan(3, 10, 0).pick(['a']).signal).toBe('SIGTERM')
  })

  it('refuses a mean gap or kill share that makes no sense', () => {
    expect(() => new PreemptionPlan(1, 0, 0.3)).toThrow(RangeError)
    expect(() => new PreemptionPlan(1, Number.NaN, 0.3)).toThrow(RangeError)
    expect(() => new PreemptionPlan(1, 10, 1.5)).toThrow(RangeError)
  })
})

/** A tiny event log builder: times advance 10 ms per event unless given. */
function log(): { ev: (worker: string, ev: string, extra?: Partial<Event>) => void; events: Event[] } {
  const events: Event[] = []
  let t = 1000
  return {
    events,
    ev: (worker, ev, extra = {}) => {
      t += extra.t !== undefined ? 0 : 10
      events.push({ worker, ev, t, ...extra } as Event)
    },
  }
}

describe('fleet run statistics', () => {
  it('counts a run started while another run of the same job is alive as a double run, and its fenced loser as superseded', () => {
    const { ev, events } = log()
    ev('w1.1', 'start', { job: 'job-0' })
    for (let s = 1; s <= 4; s++) ev('w1.1', 'step', { job: 'job-0', step: s })
    // w1.1's lock lapsed (it is still alive): the job is handed to w2.1 too.
    ev('w2.1', 'start', { job: 'job-0' })
    ev('w2.1', 'resume', { job: 'job-0', step: 2 })
    ev('w1.1', 'step', { job: 'job-0', step: 5 })
    ev('w1.1', 'outcome', { job: 'job-0', outcome: 'superseded' })
    for (let s = 3; s <= 6; s++) ev('w2.1', 'step', { job: 'job-0', step: s })
    ev('w2.1', 'outcome', { job: 'job-0', outcome: 'completed' })
    const st = fleetStats(events, { 'job-0': 6 })
    expect(st.doubleRuns).toBe(1)
    expect(st.superseded).toBe(1)
    expect(st.resumed).toBe(1)
    expect(st.batches).toBe(9)
    expect(st.redone).toBe(3) // 9 trained for a 6-batch job
    expect(st.extraCompletions).toBe(0)
  })

  it('does not count a run after a preemption as a double run, and counts a duplicate completion', () => {
    const { ev, events } = log()
    ev('w1.1', 'start', { job: 'job-0' })
    ev('w1.1', 'step', { job: 'job-0', step: 1 })
    ev('w1.1', 'kill', { signal: 'SIGKILL' })
    ev('w1.1', 'exit', { signal: 'SIGKILL' })
    ev('w2.1', 'start', { job: 'job-0' })
    ev('w2.1', 'step', { job: 'job-0', step: 1 })
    ev('w2.1', 'kill', { signal: 'SIGTERM' })
    ev('w2.1', 'outcome', { job: 'job-0', outcome: 'preempted' })
    ev('w2.1', 'exit', { code: 143 })
    ev('w3.1', 'start', { job: 'job-0' })
    ev('w3.1', 'step', { job: 'job-0', step: 1 })
    ev('w3.1', 'outcome', { job: 'job-0', outcome: 'completed' })
    // Without checkpoints nothing fences a duplicate: both copies complete.
    ev('w1.2', 'start', { job: 'job-0' })
    ev('w1.2', 'outcome', { job: 'job-0', outcome: 'completed' })
    const st = fleetStats(events, { 'job-0': 1 })
    expect(st.doubleRuns).toBe(0)
    expect(st.sigkills).toBe(1)
    expect(st.sigterms).toBe(1)
    expect(st.redone).toBe(2)
    expect(st.extraCompletions).toBe(1)
    expect(st.termS).toBeCloseTo(0.02, 5) // SIGTERM → exit: two events of 10 ms later
  })

  it('charges a save only the time its batch took beyond a typical batch', () => {
    const events: Event[] = []
    const at = (t: number, ev: string, extra: Partial<Event> = {}): void => void events.push({ worker: 'w1.1', ev, t, job: 'job-0', ...extra } as Event)
    at(0, 'start')
    at(500, 'step', { step: 1 }) // 500 ms from start to the first batch: data, model, restore
    let t = 500
    for (let s = 2; s <= 9; s++) {
      t += 20
      at(t, 'step', { step: s })
    }
    at(t, 'save', { step: 9, kind: 'batch' })
    t += 65 // the batch after a save took 45 ms more than a typical one
    at(t, 'step', { step: 10 })
    const st = fleetStats(events, { 'job-0': 10 })
    expect(st.startS).toBeCloseTo(0.5, 5)
    expect(st.saveS).toBeCloseTo(0.045, 5)
    expect(st.trainS).toBeCloseTo((8 * 20 + 20) / 1000, 5)
  })
})
