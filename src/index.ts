// The root: what a training job writes. Storage drivers and their errors (`taskpoint/storage`),
// maintenance (`taskpoint/admin`), engine glue (`taskpoint/engines`) and framework integrations
// (`taskpoint/tfjs`, `taskpoint/bullmq`) live under subpaths, so this surface stays small.
export {
  ConfigError,
  StorageError,
  TaskpointError,
  isAlreadyExists,
  isConfigError,
  isNotFound,
  isTransient,
  type StorageErrorCode,
  type TaskpointErrorCode,
} from './errors.js'
export { openStorage, type OpenStorageOptions } from './storage/resolve.js'
export type { Storage } from './storage/types.js'
export { Checkpointer, CheckpointKindError, FencedError, type CheckpointerOptions, type LoadedFiles, type RestoreResult } from './checkpoint/checkpointer.js'
export { anyOf, best, everyNSteps, keepAll, latest, type RetentionPolicy } from './checkpoint/retention.js'
export type * from './checkpoint/types.js'
export type { LockOptions } from './checkpoint/locks.js'
export { CorruptCheckpointError, type CheckpointKind, type DType } from './format/manifest.js'
export { currentContext, maybeContext, type TaskContext, type TaskLogger } from './runtime/context.js'
export { NoTaskContextError, PreemptedError, RecoverableError, TaskConfigError, TaskTimeoutError } from './runtime/errors.js'
export { PreemptionWatcher, type MetadataPollOptions, type PreemptionOptions } from './runtime/preemption.js'
export { task, type Task, type TaskOptions } from './runtime/task.js'
export { runMain, type ExitCodes, type MainOptions, type Outcome } from './runtime/main.js'
