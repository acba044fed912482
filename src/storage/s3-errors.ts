import { StorageConfigError, TransientStorageError, type StorageErrorDetails } from '../errors.js'
import { mapHttpFailure } from './http-errors.js'

/** The parts of an AWS SDK error that classify it. */
interface SdkError {
  name?: string
  message?: string
  code?: string
  $metadata?: { httpStatusCode?: number }
  $retryable?: unknown
}

const DENIED = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'AccessDenied', 'AllAccessDisabled'])
const TRANSIENT = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
  'ConditionalRequestConflict',
])

export function s3Status(e: unknown): number | undefined {
  return (e as SdkError | undefined)?.$metadata?.httpStatusCode
}

/** A 404 for the object (a missing bucket is not "absent", it is an error to report). */
export function isS3NotFound(e: unknown): boolean {
  const name = (e as SdkError | undefined)?.name
  return (s3Status(e) === 404 || name === 'NotFound' || name === 'NoSuchKey') && name !== 'NoSuchBucket'
}

/** `If-None-Match: *` met an existing object. */
export function isPreconditionFailed(e: unknown): boolean {
  return (e as SdkError | undefined)?.name === 'PreconditionFailed' || s3Status(e) === 412
}

/** An AWS SDK error as a typed StorageError (shared ladder, S3's names and transit checks). */
export function mapS3Error(e: unknown, d: StorageErrorDetails): unknown {
  const err = (e ?? {}) as SdkError
  const status = s3Status(e)
  const name = err.name ?? ''
  const message = err.message ?? String(e)
  if (name === 'CredentialsProviderError') {
    return new StorageConfigError({ ...d, cause: e }, 'no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or pass clientConfig.credentials')
  }
  // Damage in transit, not in storage: the object's stored checksum did not match the bytes that
  // arrived, or a 2xx response could not be parsed (a truncated or garbled XML listing).
  let inTransit: string | undefined
  if (/checksum mismatch/i.test(message)) inTransit = `body damaged in transit (${message}); retried`
  else if ((status === undefined || (status >= 200 && status < 300)) && /Deserialization error|XML parse error|Unexpected end|Unexpected token|not valid JSON/i.test(message)) {
    inTransit = `unreadable response (truncated or garbled in transit): ${message.split('\n')[0]}`
  }
  return mapHttpFailure(
    e,
    {
      status: isPreconditionFailed(e) ? 412 : status,
      label: name || err.code || String(status ?? ''),
      message,
      bucketMissing: name === 'NoSuchBucket',
      notFound: name === 'NoSuchKey' || name === 'NotFound',
      denied: DENIED.has(name),
      transient: status === 409 || TRANSIENT.has(name) || err.$retryable !== undefined,
      ...(inTransit !== undefined ? { inTransit } : {}),
    },
    d,
    { denied: 'check AWS credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE), the region, and the bucket policy' },
  )
}

/**
 * The body must be as long as the response said, and a ranged body as long as its Content-Range:
 * a short body that still looks complete at the HTTP level is a transient fault, never data.
 */
export function checkLength(got: number, contentLength: number | undefined, contentRange: string | undefined, d: StorageErrorDetails): void {
  let want = contentLength
  const m = contentRange ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange) : null
  if (m) want = Number(m[2]) - Number(m[1]) + 1
  if (want !== undefined && got !== want) throw new TransientStorageError(d, `body of ${got} bytes, the response announced ${want}: cut short in transit; retried`)
}
