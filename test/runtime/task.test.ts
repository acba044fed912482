import { createHash } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  Checkpointer,
  FencedError,
  NoTaskContextError,
  RecoverableError,
  TaskConfigError,
  TaskTimeoutError,
  currentContext,
  keepAll,
  latest,
  openStorage,
  runMain,
  task,
  type TaskLogger,
} from '../../src/index.js'
import { cacheKey, canonicalJson, parseDuration, retryDelayMs } from '../../src/engines.js'
import { allBackends, type Backend } from '../helpers/backends.js'

const dir = (): string => mkdtempSync(path.join(tmpdir(), 'tp-task-'))
const quietLog: TaskLogger = { info: () => {}, warn: () => {}, error: () => {} }
const fast = { retryDelay: { minMs: 1, maxMs: 5 }, logger: quietLog, checkpointOptions: { repro: false as const, onWarning: () => {} } }

describe('task context', () => {
  it('currentContext() outside a task throws a clear error', () => {
    expect(() => currentContext()).toThrow(NoTaskContextError)
    expect(() => currentContext()).toThrow(/outside a task/)
  })

  it('is reachable deep below the task, across awaits, with attempt and checkpoint', async () => {
    const deep = async (): Promise<string> => {
      await new Promise((r) => setTimeout(r, 1))
      const ctx = currentContext()
      return `${ctx.taskName}#${ctx.attempt}:${ctx.checkpoint.prevExists()}:${ctx.signal.aborted}`
    }
    const t = task({ name: 'deep', checkpoint: dir(), ...fast }, () => deep())
    expect(await t(undefined)).toBe('deep#0:false:false')
  })

  it('refuses retries outside 0..10 and unreadable timeouts', () => {
    expect(() => task({ name: 'x', retries: 11 }, () => 1)).toThrow(TaskConfigError)
    expect(() => task({ name: 'x', retries: -1 }, () => 1)).toThrow(/0 to 10/)
    expect(() => task({ name: 'x', retries: 1.5 }, () => 1)).toThrow(/0 to 10/)
    expect(() => task({ name: 'x', timeout: 'soon' }, () => 1)).toThrow(/cannot read duration/)
    // The attempt number goes into every manifest: out of range, no reader would accept them.
    expect(() => task({ name: 'x', attemptOffset: -1 }, () => 1)).toThrow(/attemptOffset must be a whole number >= 0, got -1/)
    // A timer longer than 2^31 - 1 ms fires after 1 ms: a 25-day timeout ended every attempt at once.
    expect(() => task({ name: 'x', timeout: '25d' }, () => 1)).toThrow(/timeout must be a number of ms from 0 to 2147483647 \(24\.8 days\), got 2160000000/)
    expect(() => task({ name: 'x', gcEveryMs: 30 * 86_400_000 }, () => 1)).toThrow(/gcEveryMs must be a number of ms from 0 to 2147483647/)
    expect(() => task({ name: 'x', retryDelay: { minMs: 2 ** 31 } }, () => 1)).toThrow(/retryDelay\.minMs must be/)
    expect(() => task({ name: 'x', timeout: '24d' }, () => 1)).not.toThrow()
    // Were "Cannot read properties of undefined (reading 'aborted')" and "log.warn is not a function" at the first call.
    expect(() => task({ name: 'x', preemption: true as never }, () => 1)).toThrow(/preemption must be a started PreemptionWatcher/)
    expect(() => task({ name: 'x', logger: {} as never }, () => 1)).toThrow(/logger must have info, warn and error methods/)
    expect(() => task({ name: 'x', logger: console }, () => 1)).not.toThrow()
  })

  it('runMain refuses a grace period no timer can hold, before it listens for signals', async () => {
    const t = task({ name: 'x' }, () => 1)
    for (const graceMs of [Number.POSITIVE_INFINITY, 30 * 86_400_000, -1]) {
      await expect(runMain(t, undefined, { graceMs })).rejects.toThrow(/graceMs must be a number of ms from 0 to 2147483647/)
    }
    expect(process.listenerCount('SIGTERM')).toBe(0)
    expect(parseDuration('1h30m')).toBe(5_400_000)
    expect(parseDuration('250ms')).toBe(250)
  })
})

describe('retries', () => {
  it('retries RecoverableError within the budget and fails after it', async () => {
    let calls = 0
    const t = task({ name: 'flaky', retries: 2, checkpoint: dir(), ...fast }, () => {
      calls++
      throw new RecoverableError('flaky')
    })
    await expect(t(undefined)).rejects.toBeInstanceOf(RecoverableError)
    expect(calls).toBe(3)
  })

  it('fails fast on any other error', async () => {
    let calls = 0
    const t = task({ name: 'bug', retries: 5, checkpoint: dir(), ...fast }, () => {
      calls++
      throw new TypeError('bug')
    })
    await expect(t(undefined)).rejects.toBeInstanceOf(TypeError)
    expect(calls).toBe(1)
  })

  it('says how long it waits before each retry, and why it stops', async () => {
    const lines: string[] = []
    const logger: TaskLogger = { info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) }
    const t = task({ name: 'flaky', retries: 2, checkpoint: dir(), ...fast, logger }, () => {
      throw new RecoverableError('source down')
    })
    await expect(t(undefined)).rejects.toThrow('source down')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/^attempt 0 failed: source down; retrying in \d+ ms \(retry 1 of 2\)$/)
    expect(lines[1]).toMatch(/^attempt 1 failed: source down; retrying in \d+ ms \(retry 2 of 2\)$/)
    expect(lines[2]).toBe('attempt 2 failed (no retries left): source down')
  })

  it('backs off exponentially within retryDelay, jittered up to twice the base, and refuses bad delays', () => {
    for (let n = 0; n < 6; n++) {
      const d = retryDelayMs({ minMs: 100, maxMs: 1000 }, n)
      expect(d).toBeGreaterThanOrEqual(Math.min(1000, 100 * 2 ** n))
      expect(d).toBeLessThanOrEqual(Math.min(1000, 200 * 2 ** n))
    }
    expect(retryDelayMs(undefined, 0)).toBeGreaterThanOrEqual(1000)
    expect(retryDelayMs({ minMs: 0 }, 3)).toBe(0)
    expect(() => task({ name: 'x', retryDelay: { minMs: -1 } }, () => 1)).toThrow(/retryDelay.minMs/)
    expect(() => task({ name: 'x', retryDelay: { maxMs: NaN } }, () => 1)).toThrow(/retryDelay.maxMs/)
  })
})

describe('retention in tasks', () => {
  const writeSix = async (): Promise<void> => {
    const cp = currentContext().checkpoint
    for (let i = 0; i < 6; i++) await cp.write(Buffer.from(String(i)), { step: i })
  }

  it('keeps the three newest checkpoints by default', async () => {
    const uri = dir()
    await task({ name: 'long', checkpoint: uri, ...fast }, writeSix)(undefined)
    const cp = await Checkpointer.open(uri)
    expect((await cp.list()).map((c) => c.step)).toEqual([3, 4, 5])
    await cp.close()
  })

  it('collects the chunks of deleted checkpoints in the background, not after each commit', async () => {
    const chunks = async (uri: string): Promise<number> => {
      const s = await openStorage(uri)
      let n = 0
      for await (const _ of s.list('chunks/')) n++
      await s.close()
      return n
    }
    const distinctSix = async (): Promise<void> => {
      const cp = currentContext().checkpoint
      for (let i = 0; i < 6; i++) await cp.write(Buffer.alloc(2048, i), { step: i }) // one chunk each
    }
    const gcNow = { ...fast.checkpointOptions, gc: { minAgeMs: 0 } }
    // No collector: the manifests are pruned, their chunks stay (no collection after commits).
    const idle = dir()
    await task({ name: 'long', checkpoint: idle, ...fast, gcEveryMs: 0, checkpointOptions: gcNow }, distinctSix)(undefined)
    expect(await chunks(idle)).toBe(6)
    // With one: the three unreferenced chunks go while the attempt runs.
    const busy = dir()
    await task({ name: 'long', checkpoint: busy, ...fast, gcEveryMs: 10, checkpointOptions: gcNow }, async () => {
      await distinctSix()
      for (let i = 0; (await chunks(busy)) > 3; i++) {
        if (i > 3000) throw new Error('the background collector never ran')
        await new Promise((r) => setTimeout(r, 10))
      }
    })(undefined)
    expect(await chunks(busy)).toBe(3)
    expect(() => task({ name: 'x', gcEveryMs: -1 }, () => 1)).toThrow(/gcEveryMs/)
  })

  it('takes any policy through checkpointOptions.keep', async () => {
    for (const [keep, steps] of [
      [latest(1), [5]],
      [keepAll, [0, 1, 2, 3, 4, 5]],
    ] as const) {
      const uri = dir()
      await task({ name: 'long', checkpoint: uri, ...fast, checkpointOptions: { ...fast.checkpointOptions, keep } }, writeSix)(undefined)
      const cp = await Checkpointer.open(uri)
      expect((await cp.list()).map((c) => c.step)).toEqual(steps)
      await cp.close()
    }
  })
})

// Flyte's use_checkpoint example, in TypeScript, on every backend.
describe.each(allBackends().map((b) => [b.name, b] as const))('use_checkpoint on %s', (_n, backend: Backend) => {
  it('finishes within its retries with the right answer, resuming from the checkpoint', async () => {
    const { uri, env } = await backend.freshUri()
    Object.assign(process.env, env) // the task opens its URI the way a user's process would: from the environment
    const RETRIES = 3
    const resumedAt: number[] = []
    const t = task({ name: 'use_checkpoint', retries: RETRIES, checkpoint: uri, ...fast }, async (nIterations: number) => {
      const cp = currentContext().checkpoint
      const prev = await cp.read()
      const start = prev ? Number(Buffer.from(prev).toString()) : 0
      resumedAt.push(start)
      const failureInterval = Math.floor(nIterations / RETRIES)
      let index = start
      for (; index < nIterations; index++) {
        if (index > start && index % failureInterval === 0) throw new RecoverableError(`Failed at iteration ${index}, failure_interval ${failureInterval}`)
        await cp.write(Buffer.from(String(index + 1)))
      }
      return index - 1
    })
    expect(await t(12)).toBe(11)
    expect(resumedAt).toEqual([0, 4, 8])
  })
})

describe('timeouts', () => {
  // The timeout covers each attempt's claim and its writes too, so it is far above what they take on
  // a loaded machine: a CI run with 100 ms timed out the attempt that was meant to succeed.
  const timeout = 2_000

  it('aborts an attempt past its timeout and retries it; the next attempt resumes', async () => {
    const attempts: number[] = []
    const t = task({ name: 'slow', retries: 1, timeout, checkpoint: dir(), ...fast }, async () => {
      const ctx = currentContext()
      attempts.push(ctx.attempt)
      const prev = await ctx.checkpoint.read()
      if (!prev) {
        await ctx.checkpoint.write(Buffer.from('half'))
        await new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
      }
      return Buffer.from(prev!).toString()
    })
    expect(await t(undefined)).toBe('half')
    expect(attempts).toEqual([0, 1])
  })

  it('abandons an attempt that ignores its signal, and fences its checkpointer', async () => {
    let zombieError: unknown
    let zombieDone!: () => void
    const zombieFinished = new Promise<void>((r) => (zombieDone = r))
    // The zombie writes once the next attempt runs, which is after that attempt's claim. It slept
    // 400 ms instead: a claim slower than the ~250 ms left (a loaded machine) let its write in first.
    let nextRuns!: () => void
    const nextRunning = new Promise<void>((r) => (nextRuns = r))
    const t = task({ name: 'stubborn', retries: 1, timeout, abandonAfterMs: 50, checkpoint: dir(), ...fast }, async () => {
      const ctx = currentContext()
      if (ctx.attempt === 0) {
        await nextRunning // ignores the signal
        try {
          await ctx.checkpoint.write(Buffer.from('zombie'))
        } catch (e) {
          zombieError = e
        }
        zombieDone()
        return 'zombie'
      }
      nextRuns()
      await ctx.checkpoint.write(Buffer.from('fresh'))
      return 'fresh'
    })
    expect(await t(undefined)).toBe('fresh')
    await zombieFinished
    expect(zombieError).toBeInstanceOf(FencedError)
  })

  it('a timeout with no retries left fails with TaskTimeoutError', async () => {
    const t = task({ name: 'late', timeout: 50, checkpoint: dir(), ...fast }, () => new Promise((r) => setTimeout(r, 300)))
    await expect(t(undefined)).rejects.toBeInstanceOf(TaskTimeoutError)
  })
})

describe('preemption inside a task', () => {
  it('aborts the signal, runs onPreempt hooks (a final save) before the checkpointer closes, fails with PreemptedError', async () => {
    const { PreemptionWatcher, PreemptedError } = await import('../../src/index.js')
    const watcher = new PreemptionWatcher({ signals: [] }).start()
    const uri = dir()
    let step = 0
    const t = task({ name: 'preemptible', retries: 3, checkpoint: uri, preemption: watcher, ...fast }, async () => {
      const ctx = currentContext()
      ctx.onPreempt(async () => {
        await new Promise((r) => setTimeout(r, 20)) // a save that takes a while
        ctx.checkpoint.writeAsync(Buffer.from(`final ${step}`), { step })
      })
      for (; !ctx.signal.aborted; step++) {
        if (step === 5) watcher.trigger('test notice')
        await new Promise((r) => setTimeout(r, 1))
      }
      return 'stopped early'
    })
    await expect(t(undefined)).rejects.toBeInstanceOf(PreemptedError)
    watcher.stop()
    const cp = await Checkpointer.open(uri, { repro: false })
    expect(Buffer.from((await cp.read())!).toString()).toMatch(/^final [56]$/)
  })
})

describe('caching', () => {
  it('returns the stored output for the same name, version and inputs; a new version reruns', async () => {
    const uri = dir()
    let runs = 0
    const make = (version: string) => task({ name: 'square', checkpoint: uri, cache: { version }, ...fast }, (x: { a: number; b: number[] }) => (runs++, { sq: x.a * x.a, b: x.b }))
    expect(await make('1.0')({ a: 3, b: [1] })).toEqual({ sq: 9, b: [1] })
    expect(await make('1.0')({ b: [1], a: 3 })).toEqual({ sq: 9, b: [1] }) // key order does not matter
    expect(runs).toBe(1)
    expect(await make('1.0')({ a: 4, b: [1] })).toEqual({ sq: 16, b: [1] })
    expect(runs).toBe(2)
    expect(await make('2.0')({ a: 3, b: [1] })).toEqual({ sq: 9, b: [1] })
    expect(runs).toBe(3)
  })

  it('a damaged cache entry is a miss, never a wrong output', async () => {
    const uri = dir()
    let runs = 0
    const t = task({ name: 'cube', checkpoint: uri, cache: { version: '1' }, ...fast }, (x: number) => (runs++, x ** 3))
    expect(await t(2)).toBe(8)
    const { LocalStorage } = await import('../../src/storage/index.js')
    const s = new LocalStorage(uri)
    const keys: string[] = []
    for await (const o of s.list('cache/')) keys.push(o.key)
    expect(keys).toHaveLength(1)
    const entry = Buffer.from(await s.get(keys[0]!)).toString()
    for (const broken of [entry.replace('8', '9'), entry.slice(0, entry.length - 3), '']) {
      await s.put(keys[0]!, Buffer.from(broken))
      expect(await t(2)).toBe(8)
    }
    expect(runs).toBe(4)
  })

  it('refuses inputs it cannot hash stably', () => {
    expect(() => canonicalJson({ a: new Date() })).toThrow(/Date/)
    expect(() => canonicalJson({ a: NaN })).toThrow(/NaN/)
    expect(() => canonicalJson({ f: () => 1 })).toThrow(/function/)
    expect(canonicalJson({ b: 1, a: [true, null, 's'] })).toBe('{"a":[true,null,"s"],"b":1}')
  })

  it("names the bad input by the user's own path, and keeps the key format of earlier versions", () => {
    expect(() => cacheKey('t', '1', { d: new Date() })).toThrow(/^inputs\.d is a Date/)
    // The key text is canonicalJson({ inputs, task, version }), as before, with and without inputs.
    const sha = (text: string): string => createHash('sha256').update(text).digest('hex')
    expect(cacheKey('t', '1', { b: 2, a: 1 })).toBe(`cache/t/1/${sha(canonicalJson({ inputs: { a: 1, b: 2 }, task: 't', version: '1' }))}.json`)
    expect(cacheKey('t', '1', undefined)).toBe(`cache/t/1/${sha(canonicalJson({ task: 't', version: '1' }))}.json`)
    // "." and ".." would name the level above: every call of such a task failed with InvalidKey.
    expect(cacheKey('.', '..', undefined)).toMatch(/^cache\/_\/__\/[0-9a-f]{64}\.json$/)
    expect(cacheKey('...', '1', undefined)).toMatch(/^cache\/\.\.\.\/1\//)
  })
})

describe('previous checkpoint (Flyte prevCheckpointPrefix)', () => {
  it('is copied forward, verified, when this attempt starts empty', async () => {
    const prev = dir()
    const old = await Checkpointer.open(prev, { repro: false })
    await old.write(Buffer.from('from attempt 0'), { step: 7, metadata: { lr: 1 } })
    await old.close()
    const cur = dir()
    const t = task({ name: 'flyte', checkpoint: cur, previousCheckpoint: prev, ...fast }, async () => {
      const cp = currentContext().checkpoint
      return Buffer.from((await cp.read())!).toString()
    })
    expect(await t(undefined)).toBe('from attempt 0')
    const after = await Checkpointer.open(cur, { repro: false })
    const info = (await after.latest())!
    expect(info.step).toBe(7)
    expect(info.metadata.copiedFrom).toContain(prev)
  })
})
