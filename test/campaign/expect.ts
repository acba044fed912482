// What the campaign knows the store must hold, built from what the writers reported and what we
// damaged ourselves, and the counters of one backend's run.
import type { DamageRecord } from './damage.js'

export interface Tally {
  backend: string
  seconds: number
  kills: number
  /** Writers or maintainers frozen past the lock stale time (only with --pauses). */
  pauses: number
  /** Writers that stopped on their own after a write rejected (they exit so the check comes first). */
  writerStops: number
  /** Writers that could not open or resume within the retries (store unreachable through the faults). */
  startFailures: number
  /** Writers or maintainers that died of an uncaught error. */
  crashes: number
  damages: number
  damageKinds: Record<string, number>
  faultsInjected: number
  faultKinds: Record<string, number>
  operations: number
  /** Maintenance operations by name and how they ended (ok, busy, blocked, killed, error code). */
  maintenance: Record<string, number>
  resolvedWrites: number
  /** A read returned bytes other than what the writer wrote for the step it names. */
  wrongBytes: number
  /** The newest resolved write we did not damage was not readable (an older one, or nothing, came back). */
  resolvedLost: number
  /** A committed checkpoint we never damaged read back as damaged (the library lost or broke a piece). */
  damagedByLibrary: number
  hangs: number
  committedButReportedFailed: number
  /** Rejections after several writeAsync calls: which write failed is not known, so not counted above. */
  ambiguousFailures: number
  /** Reads through the faulty proxy that ended in a typed error (allowed) or fell back to an older checkpoint (allowed). */
  readErrorsUnderFaults: number
  fallbacksUnderFaults: number
  /** Errors that were not TaskpointErrors with a code, and stack traces from the CLI. */
  untypedErrors: number
  leftoverTempBytes: number
  leftoverTempFiles: number
  /** Incomplete multipart uploads left under the prefix (S3), or undefined where not measurable. */
  unfinishedUploads: number | undefined
  /** Precise descriptions of every violation (and the first few notable events), for the report. */
  findings: string[]
}

export function newTally(backend: string, seconds: number): Tally {
  return {
    backend,
    seconds,
    kills: 0,
    pauses: 0,
    writerStops: 0,
    startFailures: 0,
    crashes: 0,
    damages: 0,
    damageKinds: {},
    faultsInjected: 0,
    faultKinds: {},
    operations: 0,
    maintenance: {},
    resolvedWrites: 0,
    wrongBytes: 0,
    resolvedLost: 0,
    damagedByLibrary: 0,
    hangs: 0,
    committedButReportedFailed: 0,
    ambiguousFailures: 0,
    readErrorsUnderFaults: 0,
    fallbacksUnderFaults: 0,
    untypedErrors: 0,
    leftoverTempBytes: 0,
    leftoverTempFiles: 0,
    unfinishedUploads: undefined,
    findings: [],
  }
}

/** The bars: each must be 0. */
export function bars(t: Tally): { name: string; value: number }[] {
  return [
    { name: 'resolved writes that did not read back exactly', value: t.wrongBytes + t.resolvedLost + t.damagedByLibrary },
    { name: 'hangs', value: t.hangs },
    { name: 'committed-but-reported-failed', value: t.committedButReportedFailed },
    { name: 'leftover temp bytes after the final gc', value: t.leftoverTempBytes + (t.unfinishedUploads ?? 0) },
  ]
}

export class Expectations {
  /** step → content hash of what a writer attempted (each step is attempted at most once in a run). */
  readonly attempted = new Map<number, string>()
  readonly resolved = new Set<number>()
  /** Steps whose checkpoint we damaged (its manifest or a chunk it references). */
  readonly excused = new Set<number>()
  /**
   * Resolved steps that must still exist: a damage act drops those no longer present then (retention
   * may legitimately delete older checkpoints once newer ones exist), later resolutions add.
   */
  private readonly candidates = new Set<number>()
  readonly damages: DamageRecord[] = []

  attempt(step: number, hash: string): void {
    this.attempted.set(step, hash)
  }

  resolve(step: number): void {
    this.resolved.add(step)
    this.candidates.add(step)
  }

  damaged(d: DamageRecord, presentSteps: Set<number>): void {
    this.damages.push(d)
    for (const s of d.steps) this.excused.add(s)
    for (const s of this.candidates) if (!presentSteps.has(s)) this.candidates.delete(s)
  }

  /**
   * The step a fresh reader's newest intact checkpoint must be at least: the newest resolved write
   * we did not damage. Undefined when there is none (nothing resolved yet, or all of it damaged).
   */
  floor(): number | undefined {
    let f: number | undefined
    for (const s of this.candidates) if (!this.excused.has(s) && (f === undefined || s > f)) f = s
    return f
  }

  /** Whether what came back for `step` is what was written; a message when not. */
  judge(step: number, hash: string): string | undefined {
    const want = this.attempted.get(step)
    if (want === undefined) return `step ${step} was never written by any writer, yet a read returned it`
    if (want !== hash) return `step ${step}: content hash ${hash.slice(0, 12)}… differs from the written ${want.slice(0, 12)}…`
    return undefined
  }
}
