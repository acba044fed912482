// The seeded preemption process of the demo and the benchmark. Every preemption makes the same
// three draws (gap to the next one, victim, signal) whatever the fleet looks like, so one seed
// gives two fleets the same sequence of gaps and signals even when their busy workers differ.

export type PreemptionSignal = 'SIGTERM' | 'SIGKILL'

/** mulberry32: small, fast, and the same numbers on every platform. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class PreemptionPlan {
  private readonly random: () => number

  /**
   * @param meanGap mean of the exponential gaps, in whatever unit the caller counts (ms, batches)
   * @param killShare share of preemptions without notice (SIGKILL); the rest are SIGTERM
   */
  constructor(
    seed: number,
    private readonly meanGap: number,
    private readonly killShare: number,
  ) {
    if (!(meanGap > 0)) throw new RangeError(`mean gap between preemptions must be > 0, got ${meanGap}`)
    if (!(killShare >= 0 && killShare <= 1)) throw new RangeError(`kill share must be within 0..1, got ${killShare}`)
    this.random = mulberry32(seed)
  }

  /** The gap to the next preemption. */
  gap(): number {
    return -Math.log(1 - this.random()) * this.meanGap
  }

  /** Who goes and how: `victim` is undefined when no worker is a candidate (the draws are made anyway). */
  pick(candidates: readonly string[]): { victim?: string; signal: PreemptionSignal } {
    const sorted = [...candidates].sort()
    const u = this.random()
    const signal: PreemptionSignal = this.random() < this.killShare ? 'SIGKILL' : 'SIGTERM'
    return { ...(sorted.length > 0 ? { victim: sorted[Math.floor(u * sorted.length)]! } : {}), signal }
  }
}
