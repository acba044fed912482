import pRetry from 'p-retry'
import { TransientStorageError, isTransient, type StorageBackend } from '../errors.js'
import { runInIoScope } from '../io-scope.js'

/** How transient faults of one storage operation are retried, and how long it may take. */
export interface RetryOptions {
  /** Extra attempts after the first. Default 5. */
  retries?: number
  /** First backoff in ms. Default 100. */
  minTimeoutMs?: number
  /** Largest backoff in ms. Default 5000. */
  maxTimeoutMs?: number
  /** Backoff growth per attempt. Default 2. */
  factor?: number
  /**
   * Bound on one whole operation, every attempt and backoff included: past it the operation fails
   * with a `Transient` error and is not tried again. A last resort behind the per-attempt stall
   * timeout (`requestTimeoutMs` of the S3/GCS drivers), so it is generous: raise it only for single
   * objects that take longer than this to move. Default 15 min.
   */
  deadlineMs?: number
  /** Called before each retry; for logs and tests. */
  onRetry?: (info: { op: string; key?: string; attempt: number; error: Error }) => void
}

export const DEFAULT_RETRY: Required<Omit<RetryOptions, 'onRetry'>> = {
  retries: 5,
  minTimeoutMs: 100,
  maxTimeoutMs: 5000,
  factor: 2,
  deadlineMs: 15 * 60_000,
}

/** What one attempt of an operation gets from the runner. */
export interface Attempt {
  /** 1 for the first attempt. */
  attempt: number
  /** Aborted when the attempt stalls, the operation's deadline passes, or the caller aborts. Hand it to the SDK. */
  signal: AbortSignal
  /** Call whenever bytes move: it re-arms the stall timer, so a long transfer that progresses is never cut. */
  progress(): void
}

export interface RunnerOptions {
  backend: StorageBackend
  retry?: RetryOptions | undefined
  /**
   * An attempt that shows no progress for this long is abandoned as a transient fault and retried
   * (a stalled connection, a body that stopped half way). Default: off (local disk).
   */
  stallMs?: number | undefined
  mapError: (e: unknown, op: string, key: string | undefined) => unknown
  /** How a key is shown in errors (the driver's full URI). */
  where?: (key: string | undefined) => string | undefined
}

export type Runner = <T>(op: string, key: string | undefined, fn: (a: Attempt) => Promise<T>, signal?: AbortSignal) => Promise<T>

/**
 * Builds a driver's `run(op, key, fn)`: each call is one retried operation whose SDK errors are
 * mapped to StorageErrors (so retry decisions see the mapped, classified error). Every call ends:
 * each attempt is raced against its stall timer and the operation's deadline, so an SDK promise
 * that never settles (a GCS download whose body ended early does exactly that) cannot hang it.
 * A racing attempt that lost is aborted through its signal and its late result ignored.
 */
export function operationRunner(runner: RunnerOptions): Runner {
  const policy = { ...DEFAULT_RETRY, ...runner.retry }
  return <T>(op: string, key: string | undefined, fn: (a: Attempt) => Promise<T>, signal?: AbortSignal): Promise<T> =>
    // In the I/O scope: whatever the SDKs draw from Math.random must not come from a seeded
    // generator that a training loop depends on (see io-scope.ts).
    runInIoScope(async () => {
      const shownKey = runner.where ? runner.where(key) : key
      const details = { backend: runner.backend, op, ...(shownKey !== undefined ? { key: shownKey } : {}) }
      const overall = new AbortController()
      let attempts = 0
      const deadline = setTimeout(
        () =>
          overall.abort(
            new TransientStorageError(
              details,
              `did not finish within the operation deadline of ${policy.deadlineMs} ms (${attempts} attempt(s)); try again later or raise retry.deadlineMs`,
            ),
          ),
        policy.deadlineMs,
      )
      const onCaller = (): void => overall.abort(signal!.reason)
      signal?.addEventListener('abort', onCaller, { once: true })
      try {
        if (signal?.aborted) throw signal.reason
        return await pRetry(
          async (n: number) => {
            attempts = n
            return attempt(n)
          },
          {
            retries: policy.retries,
            minTimeout: policy.minTimeoutMs,
            maxTimeout: policy.maxTimeoutMs,
            factor: policy.factor,
            randomize: true,
            signal: overall.signal,
            shouldRetry: ({ error }) => isTransient(error) && !overall.signal.aborted,
            onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
              if (retriesLeft > 0 && isTransient(error) && !overall.signal.aborted) runner.retry?.onRetry?.({ op, key, attempt: attemptNumber, error })
            },
          },
        )
      } finally {
        clearTimeout(deadline)
        signal?.removeEventListener('abort', onCaller)
      }

      async function attempt(n: number): Promise<T> {
        const ac = new AbortController()
        let stall: NodeJS.Timeout | undefined
        const arm = (): void => {
          if (runner.stallMs === undefined || ac.signal.aborted) return
          clearTimeout(stall)
          stall = setTimeout(() => ac.abort(new TransientStorageError(details, `no progress for ${runner.stallMs} ms (attempt ${n}): stalled connection or body`)), runner.stallMs)
        }
        const onOverall = (): void => ac.abort(overall.signal.reason)
        if (overall.signal.aborted) onOverall()
        else overall.signal.addEventListener('abort', onOverall, { once: true })
        arm()
        const aborted = new Promise<never>((_, reject) => {
          if (ac.signal.aborted) reject(ac.signal.reason)
          else ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true })
        })
        aborted.catch(() => {})
        const work = Promise.resolve().then(() => fn({ attempt: n, signal: ac.signal, progress: arm }))
        work.catch(() => {}) // a late failure of an abandoned attempt is not an unhandled rejection
        try {
          return await Promise.race([work, aborted])
        } catch (e) {
          // Whatever the SDK threw after we aborted it, the reason is ours: a stall, the deadline, or the caller.
          if (ac.signal.aborted) throw ac.signal.reason
          throw runner.mapError(e, op, key)
        } finally {
          clearTimeout(stall)
          overall.signal.removeEventListener('abort', onOverall)
        }
      }
    })
}

const TRANSIENT_NET_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ECONNRESET_BY_PEER',
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
