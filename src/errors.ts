/**
 * Every error taskpoint throws on purpose is a `TaskpointError` with a stable `code`, so callers
 * can branch on `err.code` instead of parsing messages. Messages say what went wrong, where, and
 * what to do about it.
 */
export class TaskpointError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

export type StorageBackend = 'local' | 's3' | 'gcs'

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

export interface StorageErrorDetails {
  backend: StorageBackend
  /** The full key or path the operation touched, when there is one. */
  key?: string
  /** The operation that failed, e.g. `get`, `put`, `list`. */
  op?: string
  cause?: unknown
}

export class StorageError extends TaskpointError {
  override readonly code: StorageErrorCode
  readonly backend: StorageBackend
  readonly key: string | undefined
  readonly op: string | undefined
  constructor(code: StorageErrorCode, message: string, details: StorageErrorDetails) {
    const where = `[${details.backend}${details.op ? ` ${details.op}` : ''}${details.key !== undefined ? ` ${details.key}` : ''}]`
    super(code, `${where} ${message}`, { cause: details.cause })
    this.code = code
    this.backend = details.backend
    this.key = details.key
    this.op = details.op
  }
}

export class NotFoundError extends StorageError {
  constructor(d: StorageErrorDetails, message = 'no such object') {
    super('NotFound', message, d)
  }
}

export class AlreadyExistsError extends StorageError {
  constructor(d: StorageErrorDetails, message = 'object already exists and the write asked for create-if-absent') {
    super('AlreadyExists', message, d)
  }
}

export class AccessDeniedError extends StorageError {
  constructor(d: StorageErrorDetails, message = 'access denied: check the credentials and that they may read and write this bucket/prefix') {
    super('AccessDenied', message, d)
  }
}

export class InvalidKeyError extends StorageError {
  constructor(d: StorageErrorDetails, message: string) {
    super('InvalidKey', message, d)
  }
}

export class BucketNotFoundError extends StorageError {
  constructor(d: StorageErrorDetails, message = 'bucket does not exist: create it first or fix the URI') {
    super('BucketNotFound', message, d)
  }
}

export class StorageConfigError extends StorageError {
  constructor(d: StorageErrorDetails, message: string) {
    super('InvalidConfig', message, d)
  }
}

/** A fault that may pass if the same operation is tried again (5xx, throttling, reset, timeout). */
export class TransientStorageError extends StorageError {
  constructor(d: StorageErrorDetails, message: string) {
    super('Transient', message, d)
  }
}

/** The disk (or quota) is full: ENOSPC, EDQUOT. Not retried; free space or prune old checkpoints. */
export class NoSpaceError extends StorageError {
  constructor(d: StorageErrorDetails, message = 'no space left (disk or quota full): free space or prune old checkpoints (`taskpoint prune`)') {
    super('NoSpace', message, d)
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
  constructor(d: StorageErrorDetails, expected: number, actual: number, message?: string) {
    super('SizeMismatch', message ?? `stored object has ${actual} bytes, the caller expected at most ${expected}`, d)
    this.expected = expected
    this.actual = actual
  }
}

export function isTransient(err: unknown): boolean {
  return err instanceof StorageError && err.code === 'Transient'
}
