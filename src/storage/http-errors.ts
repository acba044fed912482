import { AccessDeniedError, AlreadyExistsError, BucketNotFoundError, NotFoundError, StorageError, TransientStorageError, type StorageErrorDetails } from '../errors.js'
import { isTransientNetworkError } from './retry.js'

/** What a driver reads from one failed SDK call, in HTTP terms, before the shared ladder decides. */
export interface HttpFailure {
  /** HTTP status, when the call got a response. */
  status: number | undefined
  /** How the fault is named in messages: the SDK's error name or code, else the status. */
  label: string
  message: string
  /** The driver recognised "no such object" by name as well as by a 404. */
  notFound?: boolean
  /** The missing thing is the bucket, not the object. */
  bucketMissing?: boolean
  /** The driver recognised an authentication or authorisation failure by name. */
  denied?: boolean
  /** The driver recognised a fault a retry may cure (throttling names, SDK retryable flags). */
  transient?: boolean
  /** The bytes or the response were damaged in transit: the message to report, retried. */
  inTransit?: string
}

/** Driver-specific advice in the errors the ladder builds. */
export interface HttpHints {
  /** What to check when access is denied, e.g. the credential variables of the SDK. */
  denied: string
}

/**
 * The status → error ladder shared by the HTTP drivers: not found, precondition failed (a
 * create-if-absent met an object), denied, transient (5xx, 429, 408, network faults, what the
 * driver flagged), damaged in transit, else Unknown. Errors already typed pass through.
 */
export function mapHttpFailure(e: unknown, f: HttpFailure, d: StorageErrorDetails, hints: HttpHints): unknown {
  if (e instanceof StorageError) return e
  if ((e as { name?: unknown } | undefined)?.name === 'AbortError') return e // the caller's own signal
  const det = { ...d, cause: e }
  const { status } = f
  if (f.bucketMissing) return new BucketNotFoundError(det)
  if (f.notFound || status === 404) return new NotFoundError(det)
  if (status === 412) return new AlreadyExistsError(det)
  if (f.denied || status === 401 || status === 403) return new AccessDeniedError(det, `access denied (${f.label}): ${hints.denied}`)
  if ((status !== undefined && (status >= 500 || status === 429 || status === 408)) || f.transient || isTransientNetworkError(e)) {
    return new TransientStorageError(det, `transient fault (${f.label}): ${f.message}`.trim())
  }
  if (f.inTransit !== undefined) return new TransientStorageError(det, f.inTransit)
  return new StorageError('Unknown', `${f.label || 'error'}${status ? ` (HTTP ${status})` : ''}: ${f.message}`, det)
}
