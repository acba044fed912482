import pRetry from 'p-retry'
import { TransientStorageError, isTransient, type StorageBackend } from '../errors.js'
import { runInIoScope } from '../io-scope.js'
import { MAX_TIMER_MS } from '../timer-range.js'
import { optionChecks } from './option-checks.js'

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
  /**
   * Does an attempt run code that may draw from Math.random (a cloud SDK)? Then every attempt runs
   * in the I/O scope (see io-scope.ts). Default true. Retries always run there: their backoff jitter
   * draws from it.
   */
  attemptsUseRandom?: boolean
  mapError: (e: unknown, op: string, key: string | undefined) => unknown
  /** How a key is shown in errors (the driver's full URI). */
  where?: (key: string | undefined) => string | undefined
}

export type Runner = <T>(op: string, key: string | undefined, fn: (a: Attempt) => Promise<T>, signal?: AbortSignal) => Promise<T>

/**
 * The deadlines of one runner's operations, on one timer. They all have the same length, so they
 * expire in the order the operations started: the timer only needs to fire by the oldest one's.
 * It is not cleared between operations (one after another would each set and clear one, which
 * cost the training thread more than the rest of a local operation's bookkeeping): while no
 * operation runs it is unref'd, and firing early only re-arms it.
 */
class Deadlines {
  readonly #live = new Set<{ at: number; expire: () => void }>()
  #timer: NodeJS.Timeout | undefined

  constructor(readonly ms: number) {}

  watch(expire: () => void): object {
    const entry = { at: performance.now() + this.ms, expire }
    this.#live.add(entry)
    // An armed timer fires by this entry's deadline: every entry before it expires earlier.
    if (this.#timer) this.#timer.ref()
    else this.#timer = this.#arm(entry.at)
    return entry
  }

  release(entry: object): void {
    this.#live.delete(entry as { at: number; expire: () => void })
    if (this.#live.size === 0) this.#timer?.unref()
  }

  #arm(at: number): NodeJS.Timeout {
    return setTimeout(() => this.#fire(), Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - performance.now()))))
  }

  #fire(): void {
    this.#timer = undefined
    const now = performance.now()
    for (const entry of this.#live) {
      if (entry.at > now) {
        this.#timer = this.#arm(entry.at)
        return
      }
      this.#live.delete(entry)
      entry.expire()
    }
  }
}

/**
 * Stopped at most once, with a reason. Its AbortSignal is made only when read: most operations
 * never read one (the local driver does not), and making them was a large part of their cost.
 */
class Stoppable {
  stopped: { reason: unknown } | undefined
  #controller: AbortController | undefined

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController()
      if (this.stopped) this.#controller.abort(this.stopped.reason)
    }
    return this.#controller.signal
  }

  /** False when it was stopped already. */
  stop(reason: unknown): boolean {
    if (this.stopped) return false
    this.stopped = { reason }
    this.#controller?.abort(reason)
    return true
  }
}

/**
 * What an attempt's function receives. A class and not an object literal with a `signal` getter:
 * V8 puts a literal's getter pair in the old generation, and through the getter's closure it held
 * everything the operation touched (a verified read's result buffer) until a full collection, so
 * reading a 16 MiB checkpoint again and again ran a full collection every fourth read where
 * `fs.readFile` runs none.
 */
class AttemptHandle implements Attempt {
  readonly #self: Stoppable
  constructor(
    readonly attempt: number,
    self: Stoppable,
    readonly progress: () => void,
  ) {
    this.#self = self
  }

  get signal(): AbortSignal {
    return this.#self.signal
  }
}

/** One call of a runner: how many attempts it has made, and whether it was stopped as a whole. */
class Operation extends Stoppable {
  attempts = 0
  /** Stops the attempt (or the backoff) under way, if any. */
  stopAttempt: ((reason: unknown) => void) | undefined

  override stop(reason: unknown): boolean {
    if (!super.stop(reason)) return false
    this.stopAttempt?.(reason)
    return true
  }
}

/**
 * Builds a driver's `run(op, key, fn)`: each call is one retried operation whose SDK errors are
 * mapped to StorageErrors (so retry decisions see the mapped, classified error). Every call ends:
 * each attempt is raced against its stall timer and the operation's deadline, so an SDK promise
 * that never settles (a GCS download whose body ended early does exactly that) cannot hang it.
 * A racing attempt that lost is aborted through its signal and its late result ignored.
 *
 * The first attempt runs without p-retry, abort controllers or timers of its own (a commit makes
 * ~15 operations on the thread that trains, and that setup was most of their cost there); an
 * operation whose first attempt fails transiently goes on under p-retry with the same backoff.
 */
export function operationRunner(runner: RunnerOptions): Runner {
  // Key by key: a key given as undefined takes its default too. Checked here, at the driver's open.
  const given = runner.retry ?? {}
  const check = optionChecks(runner.backend)
  const policy = {
    // Infinity: retried until the deadline.
    retries: given.retries === Number.POSITIVE_INFINITY ? given.retries : check.whole('retry.retries', given.retries, DEFAULT_RETRY.retries, 0, 100),
    minTimeoutMs: check.number('retry.minTimeoutMs', given.minTimeoutMs, DEFAULT_RETRY.minTimeoutMs, 0, MAX_TIMER_MS, ' of ms'),
    maxTimeoutMs: check.number('retry.maxTimeoutMs', given.maxTimeoutMs, DEFAULT_RETRY.maxTimeoutMs, 0, MAX_TIMER_MS, ' of ms'),
    factor: check.number('retry.factor', given.factor, DEFAULT_RETRY.factor, 0, 100),
    // Longer than a timer takes is clamped to it (see Deadlines): 24.8 days bounds no real operation.
    deadlineMs: check.number('retry.deadlineMs', given.deadlineMs, DEFAULT_RETRY.deadlineMs, 1, Number.MAX_SAFE_INTEGER, ' of ms'),
  }
  if (runner.stallMs !== undefined) check.number('requestTimeoutMs', runner.stallMs, 0, 1, MAX_TIMER_MS, ' of ms')
  // p-retry takes a factor of 0 or less as 1.
  const growth = policy.factor > 0 ? policy.factor : 1
  const deadlines = new Deadlines(policy.deadlineMs)

  const run = async <T>(op: string, key: string | undefined, fn: (a: Attempt) => Promise<T>, signal?: AbortSignal): Promise<T> => {
    if (signal?.aborted) throw signal.reason
    const details = (): { backend: StorageBackend; op: string; key?: string } => {
      const shownKey = runner.where ? runner.where(key) : key
      return { backend: runner.backend, op, ...(shownKey !== undefined ? { key: shownKey } : {}) }
    }
    const o = new Operation()
    const onCaller = (): void => void o.stop(signal!.reason)
    signal?.addEventListener('abort', onCaller, { once: true })
    const deadline = deadlines.watch(() =>
      o.stop(
        new TransientStorageError(
          details(),
          `did not finish within the operation deadline of ${policy.deadlineMs} ms (${o.attempts} attempt(s)); try again later or raise retry.deadlineMs`,
        ),
      ),
    )
    try {
      try {
        return await attempt(1)
      } catch (error) {
        if (policy.retries < 1 || !isTransient(error) || o.stopped) throw error
        runner.retry?.onRetry?.({ op, key, attempt: 1, error: error as Error })
      }
      // In the I/O scope: the backoff jitter, and whatever an SDK draws, must not come from a
      // seeded generator that a training loop depends on (see io-scope.ts).
      return await runInIoScope(async () => {
        // p-retry waits only between its own attempts: the wait after the first is here.
        await backoff(firstBackoff())
        return pRetry((n: number) => attempt(n + 1), {
          retries: policy.retries - 1,
          minTimeout: policy.minTimeoutMs * growth,
          maxTimeout: policy.maxTimeoutMs,
          factor: policy.factor,
          randomize: true,
          signal: o.signal,
          shouldRetry: ({ error }) => isTransient(error) && !o.stopped,
          onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
            if (retriesLeft > 0 && isTransient(error) && !o.stopped) runner.retry?.onRetry?.({ op, key, attempt: attemptNumber + 1, error })
          },
        })
      })
    } finally {
      deadlines.release(deadline)
      signal?.removeEventListener('abort', onCaller)
    }

    /** Waits `ms`, or until the operation is stopped (then rejects with the reason). */
    function backoff(ms: number): Promise<void> {
      if (o.stopped) return Promise.reject(o.stopped.reason)
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          o.stopAttempt = undefined
          resolve()
        }, ms)
        o.stopAttempt = (reason) => {
          clearTimeout(t)
          reject(reason)
        }
      })
    }

    /** p-retry's delay before its second attempt (random factor 1-2, rounded, capped). */
    function firstBackoff(): number {
      return Math.min(Math.round((Math.random() + 1) * policy.minTimeoutMs), policy.maxTimeoutMs)
    }

    async function attempt(n: number): Promise<T> {
      o.attempts = n
      if (o.stopped) throw o.stopped.reason
      const self = new Stoppable()
      let lose!: (reason: unknown) => void
      const lost = new Promise<never>((_, reject) => {
        lose = reject
      })
      lost.catch(() => {})
      let stall: NodeJS.Timeout | undefined
      const stop = (reason: unknown): void => {
        if (!self.stop(reason)) return
        clearTimeout(stall)
        lose(reason)
      }
      o.stopAttempt = stop
      const arm = (): void => {
        if (runner.stallMs === undefined || self.stopped) return
        clearTimeout(stall)
        stall = setTimeout(() => stop(new TransientStorageError(details(), `no progress for ${runner.stallMs} ms (attempt ${n}): stalled connection or body`)), runner.stallMs)
      }
      arm()
      const a = new AttemptHandle(n, self, arm)
      let work: Promise<T>
      try {
        work = Promise.resolve(fn(a))
      } catch (e) {
        work = Promise.reject(e)
      }
      work.catch(() => {}) // a late failure of an abandoned attempt is not an unhandled rejection
      try {
        return await Promise.race([work, lost])
      } catch (e) {
        // Whatever the SDK threw after we stopped it, the reason is ours: a stall, the deadline, or the caller.
        if (self.stopped) throw self.stopped.reason
        throw runner.mapError(e, op, key)
      } finally {
        clearTimeout(stall)
        o.stopAttempt = undefined
      }
    }
  }

  if (runner.attemptsUseRandom === false) return run
  // In the I/O scope: whatever the SDKs draw from Math.random must not come from a seeded
  // generator that a training loop depends on (see io-scope.ts).
  return (op, key, fn, signal) => runInIoScope(() => run(op, key, fn, signal))
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
