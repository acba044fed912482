import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import { LocalStorage } from '../../src/storage/index.js'
import { Expectations, bars, type Tally } from './expect.js'

// A short, bounded run of the hostile campaign (`npm run test:campaign` is the long one) on local
// disk, asserting its bars; and a sabotaged run, proving the checker can fail.
const runJs = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'test', 'campaign', 'run.js')

async function campaign(args: string[]): Promise<{ code: number | null; seed: number; tally: Tally; log: string }> {
  const child = spawn(process.execPath, [runJs, '--backends', 'local', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let log = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (log += d))
  const code = await new Promise<number | null>((r) => child.on('exit', r))
  const last = out.trim().split('\n').at(-1) ?? ''
  const parsed = JSON.parse(last) as { seed: number; tallies: Tally[] }
  return { code, seed: parsed.seed, tally: parsed.tallies[0]!, log }
}

describe('campaign smoke run on local disk', () => {
  let r: Awaited<ReturnType<typeof campaign>>
  beforeAll(async () => {
    r = await campaign(['--seconds', '8'])
  }, 60_000)

  it('killed writers, damaged objects and checked what was resolved', () => {
    expect(r.tally.kills, r.log).toBeGreaterThan(0)
    expect(r.tally.resolvedWrites, r.log).toBeGreaterThan(0)
    expect(r.tally.operations, r.log).toBeGreaterThan(r.tally.resolvedWrites)
  })

  it('every resolved write read back exactly, nothing hung, nothing committed was reported failed', () => {
    const [exact, hangs, cbrf] = bars(r.tally)
    expect(exact!.value, `seed ${r.seed}\n${r.log}`).toBe(0)
    expect(hangs!.value, `seed ${r.seed}\n${r.log}`).toBe(0)
    expect(cbrf!.value, `seed ${r.seed}\n${r.log}`).toBe(0)
  })

  // Killed writers' temp files are removed by `gc` only where the store can sweep them: the storage
  // branch adds LocalStorage.sweep(); until then this bar is a named skip, not a fake pass.
  it.skipIf(typeof (LocalStorage.prototype as { sweep?: unknown }).sweep !== 'function')('no temp bytes left after the final gc (needs LocalStorage.sweep)', () => {
    expect(r.tally.leftoverTempBytes, `seed ${r.seed}\n${r.log}`).toBe(0)
    expect(r.code, `seed ${r.seed}\n${r.log}`).toBe(0)
  })
})

describe('campaign checker', () => {
  it('fails a run whose resolved checkpoints vanish behind its back (sabotage)', async () => {
    const s = await campaign(['--seconds', '3', '--sabotage'])
    expect(s.code, s.log).toBe(1)
    expect(s.tally.resolvedLost, s.log).toBeGreaterThan(0)
  }, 180_000)

  it('judges bytes by the step they name and forgives only damage it did', () => {
    const e = new Expectations()
    e.attempt(1, 'a')
    e.attempt(2, 'b')
    e.attempt(3, 'c')
    expect(e.judge(1, 'a')).toBeUndefined()
    expect(e.judge(2, 'a')).toMatch(/differs/)
    expect(e.judge(9, 'a')).toMatch(/never written/)
    expect(e.floor()).toBeUndefined()
    e.resolve(1)
    e.resolve(2)
    e.resolve(3)
    expect(e.floor()).toBe(3)
    // We damaged 3; 1 was already gone (retention), 2 is present: 2 must be readable.
    e.damaged({ kind: 'chunkFlip', keys: ['chunks/aa/x'], steps: [3] }, new Set([2, 3]))
    expect(e.floor()).toBe(2)
    // Damage to 2 as well: 1 was not present at the first act, so nothing is owed any more.
    e.damaged({ kind: 'manifestDelete', keys: ['manifests/y'], steps: [2] }, new Set([3]))
    expect(e.floor()).toBeUndefined()
    e.resolve(5)
    expect(e.floor()).toBe(5)
  })
})
