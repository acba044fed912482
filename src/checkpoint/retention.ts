import type { CheckpointInfo } from './types.js'

/**
 * A retention policy picks, from all committed checkpoints (oldest first), the ones to keep.
 * Policies only ever run after a commit, and the newest checkpoint is always kept whatever they say.
 */
export type RetentionPolicy = (checkpoints: readonly CheckpointInfo[]) => Set<string>

/** Keep the newest `n`. */
export function latest(n: number): RetentionPolicy {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`latest(n): n must be a whole number >= 1, got ${n}`)
  return (cps) => new Set(cps.slice(-n).map((c) => c.id))
}

/** Keep every checkpoint whose step is a multiple of `k` (long-term snapshots). */
export function everyNSteps(k: number): RetentionPolicy {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`everyNSteps(k): k must be a whole number >= 1, got ${k}`)
  return (cps) => new Set(cps.filter((c) => c.step % k === 0).map((c) => c.id))
}

/** Keep the `n` best by a numeric metadata field (e.g. `val_loss` with mode 'min'). Checkpoints without it are not kept by this rule. */
export function best(n: number, metric: string, mode: 'min' | 'max' = 'min'): RetentionPolicy {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`best(n): n must be a whole number >= 1, got ${n}`)
  return (cps) => {
    const scored = cps.filter((c) => typeof c.metadata[metric] === 'number' && Number.isFinite(c.metadata[metric]))
    scored.sort((a, b) => ((a.metadata[metric] as number) - (b.metadata[metric] as number)) * (mode === 'min' ? 1 : -1))
    return new Set(scored.slice(0, n).map((c) => c.id))
  }
}

/** Keep whatever any of the policies keeps. */
export function anyOf(...policies: RetentionPolicy[]): RetentionPolicy {
  return (cps) => {
    const keep = new Set<string>()
    for (const p of policies) for (const id of p(cps)) keep.add(id)
    return keep
  }
}

/** Keep everything (the default). */
export const keepAll: RetentionPolicy = (cps) => new Set(cps.map((c) => c.id))
