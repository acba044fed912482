import { mkdtempSync, mkdirSync, utimesSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { Checkpointer } from '../../src/index.js'
import { TEMP_MARK } from '../../src/storage/keys.js'
import { LocalStorage } from '../../src/storage/local.js'

// A new writer removes what killed writers left behind, but only after its claim's first moments
// (gc.sweepAfterMs), so the commit right after a restart never shares the disk with that walk.

const quiet = { onWarning: () => {}, repro: false as const }

/** A temp file a writer killed an hour ago left beside a chunk. */
function leftover(root: string): string {
  const dir = path.join(root, 'chunks', 'ab')
  mkdirSync(dir, { recursive: true })
  const p = path.join(dir, `${TEMP_MARK}0123456789ab`)
  writeFileSync(p, 'torn')
  const hourAgo = new Date(Date.now() - 3_600_000)
  utimesSync(p, hourAgo, hourAgo)
  return p
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10))
  expect(cond(), what).toBe(true)
}

describe('sweep of killed writers leftovers', () => {
  it("removes a killed writer's leftover once gc.sweepAfterMs has passed since the claim", async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'tp-sweep-'))
    const junk = leftover(root)
    const cp = await Checkpointer.open(root, { ...quiet, gc: { sweepAfterMs: 0 } })
    await cp.write(Buffer.from('one'))
    await until(() => !existsSync(junk), 'leftover removed once the delay passed')
    expect(Buffer.from((await cp.read()) ?? []).toString()).toBe('one')
    await cp.close()
  })

  it('is cancelled by close() before it started: nothing is swept after the storage is released', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'tp-sweep-'))
    const junk = leftover(root)
    const storage = new LocalStorage(root)
    let sweeps = 0
    const inner = storage.sweep.bind(storage)
    storage.sweep = (o) => (sweeps++, inner(o))
    // The sweep's delay runs on a fake clock. On the real one, a write slower than the delay (a busy
    // disk's fsyncs) started the sweep before close() was even called, and this test failed.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    try {
      const cp = await Checkpointer.open(storage, { ...quiet, gc: { sweepAfterMs: 50 } })
      // Open already used the storage, whose operations' deadlines share one timer.
      const before = vi.getTimerCount()
      await cp.write(Buffer.from('one'))
      expect(vi.getTimerCount(), 'the sweep waits for its delay').toBe(before + 1)
      expect(sweeps).toBe(0)
      await cp.close()
      // Had close() left the timer, the sweep would start now.
      vi.advanceTimersByTime(60_000)
    } finally {
      vi.useRealTimers()
    }
    expect(sweeps).toBe(0)
    expect(existsSync(junk)).toBe(true)
    const again = await Checkpointer.open(storage, { ...quiet, gc: { sweepAfterMs: 1 } })
    await again.write(Buffer.from('two'))
    await until(() => !existsSync(junk), 'the next writer sweeps it')
    expect(sweeps).toBe(1)
    await again.close()
  })

  it('refuses a delay that is not a whole number of milliseconds a timer can hold', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'tp-sweep-'))
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 31, Number.POSITIVE_INFINITY]) {
      await expect(Checkpointer.open(root, { ...quiet, gc: { sweepAfterMs: bad } }), String(bad)).rejects.toThrow(/sweepAfterMs/)
    }
  })
})
