import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { NotFoundError, StorageError, TransientStorageError } from '../../src/errors.js'
import { inIoScope } from '../../src/io-scope.js'
import { operationRunner, type Attempt, type RunnerOptions } from '../../src/storage/retry.js'

// The operation runner on its own: what every driver's retries, deadlines, stall timers and caller
// aborts rest on. The fault-proxy suites drive the same runner through real servers; these pin the
// rules themselves, including the edges of the fast first attempt.
const d = { backend: 'local' as const, op: 'put' }
const transient = (n: number): Error => new TransientStorageError(d, `flaky ${n}`)
const never = <T>(): Promise<T> => new Promise<T>(() => {})

function runner(o: Partial<RunnerOptions> & { retries?: number; minTimeoutMs?: number; deadlineMs?: number } = {}) {
  const retried: number[] = []
  const { retries, minTimeoutMs, deadlineMs, ...rest } = o
  const run = operationRunner({
    backend: 'local',
    mapError: (e) => (e instanceof StorageError ? e : new NotFoundError(d, `mapped: ${(e as Error).message}`)),
    retry: {
      retries: retries ?? 4,
      minTimeoutMs: minTimeoutMs ?? 1,
      maxTimeoutMs: 5,
      ...(deadlineMs !== undefined ? { deadlineMs } : {}),
      onRetry: (i) => retried.push(i.attempt),
    },
    ...rest,
  })
  return { run, retried }
}

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length

describe('operation runner', () => {
  it('a first attempt that succeeds runs once and is not retried', async () => {
    const { run, retried } = runner()
    const seen: number[] = []
    expect(await run('put', 'k', async (a) => (seen.push(a.attempt), 7))).toBe(7)
    expect(seen).toEqual([1])
    expect(retried).toEqual([])
  })

  it('transient failures are retried, attempts numbered on, until one succeeds', async () => {
    const { run, retried } = runner()
    const seen: number[] = []
    const r = await run('put', 'k', async (a) => {
      seen.push(a.attempt)
      if (a.attempt < 3) throw transient(a.attempt)
      return 'ok'
    })
    expect(r).toBe('ok')
    expect(seen).toEqual([1, 2, 3])
    expect(retried).toEqual([1, 2])
  })

  it('the last transient error comes out once retries run out; a synchronous throw counts as a failure', async () => {
    const { run, retried } = runner({ retries: 3 })
    let calls = 0
    const e = await run('put', 'k', (a) => {
      calls++
      throw transient(a.attempt)
    }).catch((x: unknown) => x)
    expect((e as Error).message).toContain('flaky 4')
    expect(calls).toBe(4)
    expect(retried).toEqual([1, 2, 3])
  })

  it('retries: 0 makes one attempt', async () => {
    const { run } = runner({ retries: 0 })
    let calls = 0
    await expect(run('put', 'k', async () => (calls++, Promise.reject(transient(1))))).rejects.toThrow('flaky 1')
    expect(calls).toBe(1)
  })

  it('other errors fail at once, mapped', async () => {
    const { run, retried } = runner()
    let calls = 0
    const e = await run('put', 'k', async () => {
      calls++
      throw new Error('EISDIR')
    }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(NotFoundError)
    expect((e as Error).message).toContain('mapped: EISDIR')
    expect(calls).toBe(1)
    expect(retried).toEqual([])
  })

  it('an attempt that never settles ends at the deadline, its signal aborted with the reason', async () => {
    const { run } = runner({ deadlineMs: 40 })
    let signal: AbortSignal | undefined
    const e = await run('put', 'k', (a) => {
      signal = a.signal
      return never()
    }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(TransientStorageError)
    expect((e as Error).message).toMatch(/operation deadline of 40 ms \(1 attempt\(s\)\)/)
    expect(signal?.aborted).toBe(true)
    expect(signal?.reason).toBe(e)
  })

  it('a signal first read after the attempt was stopped is already aborted', async () => {
    const { run } = runner({ deadlineMs: 30 })
    let late: AbortSignal | undefined
    await expect(
      run('put', 'k', async (a) => {
        await new Promise((r) => setTimeout(r, 80))
        late = a.signal
        return 1
      }),
    ).rejects.toThrow(/operation deadline/)
    await new Promise((r) => setTimeout(r, 80))
    expect(late?.aborted).toBe(true)
  })

  it('the deadline also cuts a backoff short, and counts the attempts made', async () => {
    // Backoff of 10 s after the first failure: only the deadline can end this operation in time.
    const run = operationRunner({ backend: 'local', mapError: (e) => e, retry: { retries: 3, minTimeoutMs: 10_000, maxTimeoutMs: 10_000, deadlineMs: 50 } })
    const e = await run('put', 'k', async (a) => Promise.reject(transient(a.attempt))).catch((x: unknown) => x)
    expect((e as Error).message).toMatch(/operation deadline of 50 ms \(1 attempt\(s\)\)/)
  })

  it('each operation has its own deadline, whichever ends first', async () => {
    const { run } = runner({ deadlineMs: 120 })
    const quick = run('put', 'a', () => new Promise((r) => setTimeout(() => r('a'), 10)))
    const first = run('put', 'b', () => never()).catch((x: unknown) => x)
    await new Promise((r) => setTimeout(r, 60))
    // Started 60 ms after the others: its deadline comes 60 ms after theirs.
    const started = performance.now()
    const second = run('put', 'c', () => never()).catch((x: unknown) => x)
    expect(await quick).toBe('a')
    expect(((await first) as Error).message).toMatch(/operation deadline/)
    expect(((await second) as Error).message).toMatch(/operation deadline/)
    expect(performance.now() - started).toBeGreaterThanOrEqual(110)
  })

  it('holds the process open by no timer once its operations have ended', async () => {
    const { run } = runner({ deadlineMs: 60_000 })
    const before = timers()
    const ops = Array.from({ length: 5 }, (_, i) => run('put', `k${i}`, () => new Promise((r) => setTimeout(() => r(i), 5 * i))))
    expect(timers()).toBeGreaterThan(before)
    expect(await Promise.all(ops)).toEqual([0, 1, 2, 3, 4])
    expect(timers()).toBe(before)
  })

  it('a deadline past the range of a timer is not cut to 1 ms', async () => {
    // Node runs a timer of more than 2^31-1 ms after 1 ms, with a TimeoutOverflowWarning.
    const warnings: string[] = []
    const onWarning = (w: Error): void => void warnings.push(w.name)
    process.on('warning', onWarning)
    try {
      const { run } = runner({ deadlineMs: 2 ** 40 })
      expect(await run('put', 'k', () => new Promise((r) => setTimeout(() => r('done'), 30)))).toBe('done')
      await new Promise((r) => setImmediate(r))
    } finally {
      process.off('warning', onWarning)
    }
    expect(warnings).not.toContain('TimeoutOverflowWarning')
  })

  it("the caller's abort ends the operation with its reason, before or during an attempt", async () => {
    const { run } = runner()
    const pre = new AbortController()
    pre.abort(new Error('already'))
    let called = false
    await expect(run('put', 'k', async () => ((called = true), 1), pre.signal)).rejects.toThrow('already')
    expect(called).toBe(false)
    const mid = new AbortController()
    let signal: AbortSignal | undefined
    const p = run(
      'put',
      'k',
      (a) => {
        signal = a.signal
        return never()
      },
      mid.signal,
    )
    setTimeout(() => mid.abort(new Error('stop now')), 10)
    await expect(p).rejects.toThrow('stop now')
    expect(signal?.aborted).toBe(true)
  })

  it('a stall ends an attempt without progress and retries it; progress keeps a slow one alive', async () => {
    const { run, retried } = runner({ stallMs: 40 })
    const seen: number[] = []
    const r = await run('get', 'k', async (a: Attempt) => {
      seen.push(a.attempt)
      if (a.attempt === 1) return never()
      for (let i = 0; i < 8; i++) {
        await new Promise((res) => setTimeout(res, 15))
        a.progress()
      }
      return 'slow but moving'
    })
    expect(r).toBe('slow but moving')
    expect(seen).toEqual([1, 2])
    expect(retried).toEqual([1])
  })

  it('retry options given as undefined take their defaults', async () => {
    const run = operationRunner({ backend: 'local', mapError: (e) => e, retry: { retries: undefined, minTimeoutMs: 1, maxTimeoutMs: 2, factor: undefined, deadlineMs: undefined } })
    const r = await run('put', 'k', async (a) => {
      if (a.attempt < 3) throw transient(a.attempt)
      return await new Promise((res) => setTimeout(() => res(a.attempt), 20))
    })
    // A deadline of undefined ms would have ended the slow third attempt after ~1 ms.
    expect(r).toBe(3)
  })

  it('a factor of 0 keeps the first backoff for every retry, as p-retry takes it', async () => {
    const run = operationRunner({ backend: 'local', mapError: (e) => e, retry: { retries: 3, minTimeoutMs: 30, maxTimeoutMs: 1000, factor: 0 } })
    const at: number[] = []
    await run('put', 'k', async (a) => {
      at.push(performance.now())
      if (a.attempt < 4) throw transient(a.attempt)
      return 1
    })
    // Each wait is at least minTimeoutMs (30-60 ms with jitter); timers never fire early.
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!, `wait before attempt ${i + 1}`).toBeGreaterThanOrEqual(28)
  })

  it("a caller's abort during a backoff ends the operation with its reason as given, an Error or not", async () => {
    const run = operationRunner({ backend: 'local', mapError: (e) => e, retry: { retries: 3, minTimeoutMs: 10_000, maxTimeoutMs: 10_000 } })
    for (const reason of [new Error('stop!'), 'stop!']) {
      const ac = new AbortController()
      const p = run('put', 'k', async (a) => Promise.reject(transient(a.attempt)), ac.signal).catch((x: unknown) => x)
      setTimeout(() => ac.abort(reason), 20)
      expect(await p).toBe(reason)
    }
  })

  it('an attempt that returns a plain value, not a promise, resolves with it', async () => {
    const { run } = runner()
    expect(await run('put', 'k', (() => 5) as unknown as () => Promise<number>)).toBe(5)
  })

  it('attempts run in the I/O scope unless the driver says they draw no randomness; retries always do', async () => {
    const scoped: boolean[] = []
    const record = async (a: Attempt): Promise<number> => {
      scoped.push(inIoScope())
      if (a.attempt === 1) throw transient(1)
      return 1
    }
    await runner({ attemptsUseRandom: false }).run('put', 'k', record)
    await runner().run('put', 'k', record)
    expect(scoped).toEqual([false, true, true, true])
  })
})

describe('operation runner: memory', () => {
  it("holds nothing an operation touched once it ends: a minor collection frees a read's buffers", async () => {
    // A runner that kept them reachable from the old generation (the attempt used to be an object
    // literal with a getter, whose accessor pair V8 allocates there) left every verified read's
    // result to a full collection: one every fourth 16 MiB read.
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as (o?: { type: 'minor' | 'major' }) => void
    const { run } = runner()
    const size = 64 * 1024
    const read = async (): Promise<Uint8Array> => {
      const out = new Uint8Array(size)
      await run('get', 'k', async (a) => {
        await new Promise((r) => setImmediate(r))
        out[0] = a.attempt
        return out.byteLength
      })
      return out
    }
    // The measure must first see all 16 results held; a collection that V8 ran on its own in the
    // middle (it may) spoils a round, which is then run again.
    let round: { before: number; kept: Uint8Array } | undefined
    for (let tries = 0; !round && tries < 10; tries++) {
      gc()
      const before = process.memoryUsage().arrayBuffers
      // One result kept, as a caller keeps what it read: the measure must see it and only it.
      const kept = await read()
      for (let i = 0; i < 15; i++) await read()
      if (process.memoryUsage().arrayBuffers - before >= 16 * size) round = { before, kept }
    }
    expect(round, 'a round in which all 16 results were counted').toBeDefined()
    gc({ type: 'minor' })
    gc({ type: 'minor' })
    const held = process.memoryUsage().arrayBuffers - round!.before
    // The kept one, at most the last one read (this async function's own frame may still hold it)
    // and a few bytes of whatever else ran meanwhile, give or take what the collection freed of
    // others; the old runner held all 16.
    expect(held).toBeLessThan(3 * size)
    expect(round!.kept[0]).toBe(1)
  })
})
