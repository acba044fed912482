import { StorageConfigError, type StorageErrorDetails } from '../errors.js'
import { mapHttpFailure } from './http-errors.js'

/**
 * The HTTP status of a GCS SDK error: ApiError carries it as a numeric `code`, but errors of the
 * resumable-upload path come from gaxios with `status` / `response.status` (a 412 there used to
 * map to Unknown).
 */
export function gcsStatus(e: unknown): number | undefined {
  const err = e as { code?: unknown; status?: unknown; response?: { status?: unknown } } | undefined
  for (const v of [err?.code, err?.status, err?.response?.status]) if (typeof v === 'number' && v >= 100 && v < 600) return v
  return undefined
}

export function isBucketMissing(e: unknown): boolean {
  return /bucket/i.test(String((e as { message?: string }).message ?? ''))
}

/** A 404 for the object (a missing bucket is an error to report, not an absent object). */
export function isGcsNotFound(e: unknown): boolean {
  return gcsStatus(e) === 404 && !isBucketMissing(e)
}

/** A GCS SDK (or gaxios) error as a typed StorageError: the shared ladder, GCS's own signs. */
export function mapGcsError(e: unknown, d: StorageErrorDetails): unknown {
  const err = (e ?? {}) as { code?: unknown; message?: string; name?: string }
  const status = gcsStatus(e)
  const message = err.message ?? String(e)
  if (/Could not load the default credentials|Unable to detect a Project Id/i.test(message)) {
    return new StorageConfigError(
      { ...d, cause: e },
      `no Google credentials/project: set GOOGLE_APPLICATION_CREDENTIALS (and GOOGLE_CLOUD_PROJECT), or STORAGE_EMULATOR_HOST for an emulator. ${message}`,
    )
  }
  // A 2xx JSON body that could not be parsed was cut short or garbled in transit.
  const garbled = err.name === 'FetchError' || /invalid json|Unexpected end of JSON|Unexpected token|not valid JSON/i.test(message)
  return mapHttpFailure(
    e,
    {
      status,
      label: String(status ?? err.code ?? err.name),
      message,
      bucketMissing: status === 404 && isBucketMissing(e) && !/object|file|No such object/i.test(message),
      ...(garbled ? { inTransit: `unreadable response (truncated or garbled in transit): ${message}` } : {}),
    },
    d,
    { denied: "check GOOGLE_APPLICATION_CREDENTIALS and the bucket's IAM roles" },
  )
}
