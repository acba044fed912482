import { describe, expect, it } from 'vitest'
import { StorageError } from '../../src/errors.js'
import { mapGcsError } from '../../src/storage/gcs-errors.js'
import { mapS3Error } from '../../src/storage/s3-errors.js'

// The shared status → error ladder, as each driver feeds it. The errors below have the shapes the
// SDKs throw (AWS: name + $metadata.httpStatusCode; GCS ApiError: numeric code; gaxios: status);
// the fault-proxy suites drive the same paths end to end where a server can produce them.
const d = { op: 'get', key: 'x://b/k' }
const s3 = (name: string, status?: number, extra: object = {}): unknown =>
  Object.assign(new Error(`${name} happened`), { name, ...(status !== undefined ? { $metadata: { httpStatusCode: status } } : {}), ...extra })
const gcs = (code: number | undefined, message: string, extra: object = {}): unknown => Object.assign(new Error(message), code !== undefined ? { code } : {}, extra)

function codeOf(e: unknown): string {
  expect(e).toBeInstanceOf(StorageError)
  return (e as StorageError).code
}

describe('HTTP error ladder', () => {
  it('S3 errors', () => {
    const cases: [unknown, string][] = [
      [s3('NoSuchBucket', 404), 'BucketNotFound'],
      [s3('NoSuchKey', 404), 'NotFound'],
      [s3('NotFound'), 'NotFound'],
      [s3('PreconditionFailed'), 'AlreadyExists'],
      [s3('Whatever', 412), 'AlreadyExists'],
      [s3('SignatureDoesNotMatch', 400), 'AccessDenied'],
      [s3('Forbidden', 403), 'AccessDenied'],
      [s3('CredentialsProviderError'), 'InvalidConfig'],
      [s3('InternalError', 500), 'Transient'],
      [s3('SlowDown', 503), 'Transient'],
      [s3('OperationAborted', 409), 'Transient'],
      [s3('Throttling', 400), 'Transient'],
      [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'Transient'],
      [new Error('Checksum mismatch: expected abc, got def'), 'Transient'],
      [s3('Error', 200, { message: 'Deserialization error: Unexpected end of input' }), 'Transient'],
      [s3('InvalidArgument', 400), 'Unknown'],
    ]
    for (const [e, code] of cases) expect([String((e as Error).name), codeOf(mapS3Error(e, { backend: 's3', ...d }))]).toEqual([String((e as Error).name), code])
    const denied = mapS3Error(s3('AccessDenied', 403), { backend: 's3', ...d }) as StorageError
    expect(denied.message).toMatch(/^\[s3 get x:\/\/b\/k\] access denied \(AccessDenied\): check AWS credentials/)
  })

  it('GCS errors', () => {
    const cases: [unknown, string][] = [
      [gcs(404, 'The specified bucket does not exist.'), 'BucketNotFound'],
      [gcs(404, 'No such object: bucket/k'), 'NotFound'],
      [gcs(undefined, 'precondition', { status: 412 }), 'AlreadyExists'],
      [gcs(undefined, 'precondition', { response: { status: 412 } }), 'AlreadyExists'],
      [gcs(403, 'forbidden'), 'AccessDenied'],
      [gcs(undefined, 'Could not load the default credentials'), 'InvalidConfig'],
      [gcs(503, 'backend error'), 'Transient'],
      [gcs(429, 'rate limit'), 'Transient'],
      [gcs(undefined, 'Unexpected end of JSON input'), 'Transient'],
      [gcs(400, 'bad request'), 'Unknown'],
    ]
    for (const [e, code] of cases) expect([(e as Error).message, codeOf(mapGcsError(e, { backend: 'gcs', ...d }))]).toEqual([(e as Error).message, code])
  })

  it('typed errors and the caller’s own abort pass through unchanged', () => {
    const typed = new StorageError('NoSpace', 'full', { backend: 'local' })
    expect(mapS3Error(typed, { backend: 's3', ...d })).toBe(typed)
    expect(mapGcsError(typed, { backend: 'gcs', ...d })).toBe(typed)
    const abort = Object.assign(new Error('aborted'), { name: 'AbortError' })
    expect(mapS3Error(abort, { backend: 's3', ...d })).toBe(abort)
    expect(mapGcsError(abort, { backend: 'gcs', ...d })).toBe(abort)
  })
})
