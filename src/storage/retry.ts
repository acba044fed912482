import pRetry from 'p-retry'
import { isTransient } from '../errors.js'
import { runInIoScope } from '../io-scope.js'

/** How transient faults of one storage operation are retried. */
export interface RetryOptions {
  /** Extra attempts after the first. Default 5. */
  retries?: number
  /** First backoff in ms. Default 100. */
  minTimeoutMs?: number
  /** Largest backoff in ms. Default 5000. */
  maxTimeoutMs?: number
  /** Backoff growth per attempt. Default 2. */
  factor?: number
  /** Called before each retry; for logs and tests. */
  onRetry?: (info: { op: string; key?: string; attempt: number; error: Error }) => void
}

export const DEFAULT_RETRY: Required<Omit<RetryOptions, 'onRetry'>> = {
  retries: 5,
  minTimeoutMs: 100,
  maxTimeoutMs: 5000,
  factor: 2,
}

/**
 * Runs one atomic storage operation, retrying only errors classified as transient. Permanent
 * errors (403, missing bucket, bad key, ...) surface on the first attempt.
 */
export function withRetry<T>(
  options: RetryOptions | undefined,
  op: string,
  key: string | undefined,
  fn: (attempt: number) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const o = { ...DEFAULT_RETRY, ...options }
  return pRetry(fn, {
    retries: o.retries,
    minTimeout: o.minTimeoutMs,
    maxTimeout: o.maxTimeoutMs,
    factor: o.factor,
    randomize: true,
    signal,
    shouldRetry: ({ error }) => isTransient(error),
    onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
      if (retriesLeft > 0 && isTransient(error)) options?.onRetry?.({ op, key, attempt: attemptNumber, error })
    },
  })
}

/**
 * Builds a driver's `run(op, key, fn)`: each call is one retried operation whose SDK errors are
 * mapped to StorageErrors (so retry decisions see the mapped, classified error).
 */
export function operationRunner(retry: RetryOptions | undefined, mapError: (e: unknown, op: string, key: string | undefined) => unknown) {
  return <T>(op: string, key: string | undefined, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> =>
    // In the I/O scope: whatever the SDKs draw from Math.random must not come from a seeded
    // generator that a training loop depends on (see io-scope.ts).
    runInIoScope(() =>
      withRetry(
        retry,
        op,
        key,
        async () => {
          try {
            return await fn()
          } catch (e) {
            throw mapError(e, op, key)
          }
        },
        signal,
      ),
    )
}

const TRANSIENT_NET_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND',
  'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT',
  'ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET_BY_PEER',
])

/** Network-level failures (no HTTP status) that a retry may cure. */
export function isTransientNetworkError(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | undefined
  if (!e || typeof e !== 'object') return false
  if (typeof e.code === 'string' && TRANSIENT_NET_CODES.has(e.code)) return true
  if (e.name === 'AbortError') return false // the caller's own signal: never retried
  if (e.name === 'TimeoutError' || e.name === 'RequestTimeout') return true
  if (typeof e.message === 'string' && /socket hang up|ECONNRESET|timed? ?out|premature close|other side closed/i.test(e.message)) return true
  return e.cause !== undefined && e.cause !== err ? isTransientNetworkError(e.cause) : false
}
