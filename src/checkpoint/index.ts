export { Checkpointer, CheckpointKindError, FencedError, type CheckpointerOptions, type LoadedFiles, type RestoreResult } from './checkpointer.js'
export { anyOf, best, everyNSteps, keepAll, latest, type RetentionPolicy } from './retention.js'
export { collectGarbage, prune, readInfos, type GcOptions, type GcResult, type PruneResult } from './gc.js'
export type * from './types.js'
