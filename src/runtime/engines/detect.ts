import { isEmptyFlyteValue } from './flyte.js'

export type EngineName = 'flyte' | 'aws-batch' | 'skypilot' | 'kubernetes' | 'taskpoint' | 'none'

/** What the engine running this process told it, read from argv and the environment. */
export interface EngineInfo {
  engine: EngineName
  /** 0-based attempt number, when the engine reports one. */
  attempt: number
  /** Where this attempt writes checkpoints. */
  checkpoint?: string
  /** The previous attempt's checkpoint (Flyte), if any. */
  previousCheckpoint?: string
  /** Flyte's output prefix, where error.pb goes. */
  outputPrefix?: string
}

function argValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === name) return argv[i + 1]
    if (a.startsWith(`${name}=`)) return a.slice(name.length + 1)
  }
  return undefined
}

/**
 * Flyte: `--checkpoint-path`, `--prev-checkpoint`, `--output-prefix`, FLYTE_ATTEMPT_NUMBER (0-based).
 * AWS Batch: AWS_BATCH_JOB_ATTEMPT (1-based). The taskpoint supervisor: TASKPOINT_ATTEMPT,
 * TASKPOINT_CHECKPOINT. Everywhere: `--checkpoint URI` or TASKPOINT_CHECKPOINT.
 */
export function detectEngine(argv: readonly string[] = process.argv, env: NodeJS.ProcessEnv = process.env): EngineInfo {
  const generic = argValue(argv, '--checkpoint') ?? env.TASKPOINT_CHECKPOINT
  const num = (v: string | undefined, base = 0): number | undefined => {
    if (v === undefined || v === '' || !/^\d+$/.test(v)) return undefined
    return Math.max(0, Number(v) - base)
  }
  const flyteCp = argValue(argv, '--checkpoint-path')
  if (flyteCp !== undefined || env.FLYTE_INTERNAL_EXECUTION_ID || env.FLYTE_ATTEMPT_NUMBER !== undefined) {
    const info: EngineInfo = { engine: 'flyte', attempt: num(env.FLYTE_ATTEMPT_NUMBER) ?? 0 }
    const cp = isEmptyFlyteValue(flyteCp) ? generic : flyteCp
    if (cp) info.checkpoint = cp
    const prev = argValue(argv, '--prev-checkpoint')
    if (!isEmptyFlyteValue(prev)) info.previousCheckpoint = prev!
    const out = argValue(argv, '--output-prefix')
    if (!isEmptyFlyteValue(out)) info.outputPrefix = out!
    return info
  }
  const withCp = (info: EngineInfo): EngineInfo => (generic ? { ...info, checkpoint: generic } : info)
  if (env.TASKPOINT_ATTEMPT !== undefined) return withCp({ engine: 'taskpoint', attempt: num(env.TASKPOINT_ATTEMPT) ?? 0 })
  if (env.AWS_BATCH_JOB_ATTEMPT !== undefined) return withCp({ engine: 'aws-batch', attempt: num(env.AWS_BATCH_JOB_ATTEMPT, 1) ?? 0 })
  if (env.SKYPILOT_TASK_ID !== undefined) return withCp({ engine: 'skypilot', attempt: 0 })
  if (env.KUBERNETES_SERVICE_HOST !== undefined) return withCp({ engine: 'kubernetes', attempt: 0 })
  return withCp({ engine: 'none', attempt: 0 })
}
