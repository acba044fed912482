/**
 * Every error taskpoint throws on purpose is a `TaskpointError` with a stable `code`, so callers
 * can branch on `err.code` instead of parsing messages. Messages say what went wrong, where, and
 * what to do about it. The codes below are the whole vocabulary: a code is never renamed once
 * released (tests and users branch on them).
 */

/** Codes of storage failures, from any driver. */
export type StorageErrorCode =
  | 'NotFound'
  | 'AlreadyExists'
  | 'AccessDenied'
  | 'InvalidKey'
  | 'BucketNotFound'
  | 'InvalidConfig'
  | 'Transient'
  | 'NoSpace'
  | 'SizeMismatch'
  | 'Unknown'

/** Codes of option and input mistakes: the caller must change the call, retrying cannot help. */
export type ConfigErrorCode =
  | 'InvalidOption' // a Checkpointer, retention or lock option, or a write's step/metadata
  | 'TaskConfig' // task(...) options and cached task inputs
  | 'BullmqConfig' // the BullMQ integration's options and jobs
  | 'InvalidConfig' // storage: URI, bucket name, credentials (thrown as StorageConfigError)

/** Codes of the checkpoint layer: damaged or missing checkpoints, writer fencing, lifecycle. */
export type CheckpointErrorCode =
  | 'CorruptCheckpoint'
  | 'UnsupportedFormat'
  | 'Fenced'
  | 'WrongKind'
  | 'EpochExhausted'
  | 'SeqExhausted'
  | 'LockLost'
  | 'Closed'
  | 'RestoreConflict'
  | 'NotACheckpoint'
  | 'NoIntactCheckpoint'
  | 'NoCheckpoints'
  | 'NoSuchCheckpoint'
  | 'NoSuchFile'
  | 'InvalidState' // arrays of a state checkpoint that are not whole elements of their dtype
  | 'NotADirectory' // a checkpoint location that is a file

/** Codes of the task runtime and the integrations. */
export type RuntimeErrorCode = 'Recoverable' | 'NoTaskContext' | 'TfState'

export type TaskpointErrorCode = StorageErrorCode | ConfigErrorCode | CheckpointErrorCode | RuntimeErrorCode

export class TaskpointError extends Error {
  readonly code: TaskpointErrorCode
  constructor(code: TaskpointErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/**
 * An option or input the caller must change: a value out of range, a missing setting, data that
 * cannot be stored. One class for every layer's option mistakes; subclasses keep their own code
 * (`TaskConfig`, `BullmqConfig`) so existing branches on `err.code` still hold. Storage URI and
 * credential mistakes are `StorageConfigError` (a `StorageError`, code `InvalidConfig`) because they
 * carry the backend and key; `isConfigError` answers for both.
 */
export class ConfigError extends TaskpointError {
  constructor(message: string, code: Exclude<ConfigErrorCode, 'InvalidConfig'> = 'InvalidOption') {
    super(code, message)
  }
}

/**
 * Names the storage driver in errors: a registry name ('local', 's3', 'gcs', or whatever a custom
 * driver registers), not a closed list.
 */
export type StorageBackend = string

export interface StorageErrorDetails {
  /** The driver that failed; absent when no storage is involved (a name inside a checkpoint). */
  backend?: StorageBackend | undefined
  /** The full key or path the operation touched, when there is one. */
  key?: string
  /** The operation that failed, e.g. `get`, `put`, `list`. */
  op?: string
  cause?: unknown
}

export class StorageError extends TaskpointError {
  override readonly code: StorageErrorCode
  readonly backend: StorageBackend | undefined
  readonly key: string | undefined
  readonly op: string | undefined
  constructor(code: StorageErrorCode, message: string, details: StorageErrorDetails) {
    const where = [details.backend, details.op, details.key].filter((part) => part !== undefined && part !== '').join(' ')
    super(code, where ? `[${where}] ${message}` : message, { cause: details.cause })
    this.code = code
    this.backend = details.backend
    this.key = details.key
    this.op = details.op
  }
}

export class NotFoundError extends StorageError {
  constructor(details: StorageErrorDetails, message = 'no such object: check the key and the URI prefix (it may have been deleted or never written)') {
    super('NotFound', message, details)
  }
}

export class AlreadyExistsError extends StorageError {
  constructor(
    details: StorageErrorDetails,
    message = 'object already exists and the write asked for create-if-absent: another writer got there first; read it or write under a new key',
  ) {
    super('AlreadyExists', message, details)
  }
}

export class AccessDeniedError extends StorageError {
  constructor(details: StorageErrorDetails, message = 'access denied: check the credentials and that they may read and write this bucket/prefix') {
    super('AccessDenied', message, details)
  }
}

export class InvalidKeyError extends StorageError {
  constructor(details: StorageErrorDetails, message: string) {
    super('InvalidKey', message, details)
  }
}

export class BucketNotFoundError extends StorageError {
  constructor(details: StorageErrorDetails, message = 'bucket does not exist: create it first or fix the URI') {
    super('BucketNotFound', message, details)
  }
}

export class StorageConfigError extends StorageError {
  constructor(details: StorageErrorDetails, message: string) {
    super('InvalidConfig', message, details)
  }
}

/** A fault that may pass if the same operation is tried again (5xx, throttling, reset, timeout). */
export class TransientStorageError extends StorageError {
  constructor(details: StorageErrorDetails, message: string) {
    super('Transient', message, details)
  }
}

/** The disk (or quota) is full: ENOSPC, EDQUOT. Not retried; free space or prune old checkpoints. */
export class NoSpaceError extends StorageError {
  constructor(details: StorageErrorDetails, message = 'no space left (disk or quota full): free space or prune old checkpoints (`taskpoint prune`)') {
    super('NoSpace', message, details)
  }
}

/**
 * The stored object's size is not what the caller said it would be (e.g. it does not fit the
 * `into` buffer sized from a manifest). For a content-addressed object this means damage: the
 * checkpoint layer treats it like a hash mismatch. Not retried.
 */
export class SizeMismatchError extends StorageError {
  readonly expected: number
  readonly actual: number
  constructor(details: StorageErrorDetails, expected: number, actual: number, message?: string) {
    super('SizeMismatch', message ?? `stored object has ${actual} bytes, the caller expected at most ${expected}`, details)
    this.expected = expected
    this.actual = actual
  }
}

const CONFIG_CODES: ReadonlySet<string> = new Set<ConfigErrorCode>(['InvalidOption', 'TaskConfig', 'BullmqConfig', 'InvalidConfig'])

/** The code of a taskpoint error, or undefined for anything else. */
function codeOf(err: unknown): TaskpointErrorCode | undefined {
  return err instanceof TaskpointError ? err.code : undefined
}

/** A fault that may pass if the same operation is tried again (5xx, throttling, reset, timeout). */
export function isTransient(err: unknown): boolean {
  return err instanceof StorageError && err.code === 'Transient'
}

/** The object (not the bucket) does not exist. */
export function isNotFound(err: unknown): boolean {
  return codeOf(err) === 'NotFound'
}

/** A create-if-absent met an object that someone else wrote. */
export function isAlreadyExists(err: unknown): boolean {
  return codeOf(err) === 'AlreadyExists'
}

/** An option, input, URI or credential mistake: fix the call or the environment, do not retry. */
export function isConfigError(err: unknown): boolean {
  const code = codeOf(err)
  return code !== undefined && CONFIG_CODES.has(code)
}
