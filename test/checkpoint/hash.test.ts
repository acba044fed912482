import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { HashPool, sharedBytes } from '../../src/checkpoint/hash.js'

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

// A worker that behaves by the first int32 of the bytes it gets: 0 = block until that word turns
// non-zero (so its job is surely pending), -1 = crash, anything else = hash at once. No timing:
// the test itself releases the blocked job.
const GATED_WORKER = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buf, off, len }) => {
  const gate = new Int32Array(buf, off, 1)
  if (Atomics.load(gate, 0) === -1) throw new Error('worker crashed on purpose')
  while (Atomics.load(gate, 0) === 0) Atomics.wait(gate, 0, 0)
  parentPort.postMessage({ id, hash: createHash('sha256').update(new Uint8Array(buf, off, len)).digest('hex') })
})
`

describe('hash worker pool', () => {
  it('a crashing worker fails only its own jobs; a job pending on another worker still resolves', async () => {
    const pool = new HashPool(2, GATED_WORKER)
    const blocked = sharedBytes(64)
    blocked.set(randomBytes(60), 4) // gate word stays 0: the first worker blocks on it
    const crashing = sharedBytes(64)
    new Int32Array(crashing.buffer, 0, 1)[0] = -1

    const slow = pool.hash(blocked) // starts worker 1, which blocks
    const doomed = pool.hash(crashing) // starts worker 2, which dies
    await expect(doomed).rejects.toThrow(/crashed on purpose/)

    // Release worker 1: its job must still be there (the old error handler failed every job of every worker).
    const gate = new Int32Array(blocked.buffer, 0, 1)
    Atomics.store(gate, 0, 7)
    Atomics.notify(gate, 0)
    expect(await slow).toBe(sha(blocked))

    // The dead worker is replaced: the pool keeps hashing.
    const next = sharedBytes(32)
    next.set(randomBytes(32))
    if (new Int32Array(next.buffer, 0, 1)[0]! <= 0) new Int32Array(next.buffer, 0, 1)[0] = 1
    expect(await Promise.all([pool.hash(next), pool.hash(next)])).toEqual([sha(next), sha(next)])
  })

  it('a worker that exits without an error fails its jobs instead of leaving them waiting', async () => {
    const pool = new HashPool(1, `require('node:worker_threads').parentPort.on('message', () => process.exit(3))`)
    await expect(pool.hash(sharedBytes(16))).rejects.toThrow(/exited \(code 3\)/)
  })

  it('threads started ahead of any job (a writer starts them when it claims) never keep a finished process alive (needs npm run build)', () => {
    const entry = path.resolve('dist/src/index.js')
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-idle-'))
    for (const body of [
      'await (await Checkpointer.open(dir, { repro: false })).claim()', // claimed, never written, never closed
      'const cp = await Checkpointer.open(dir, { repro: false }); await cp.write(new Uint8Array(1 << 20).fill(1)); await cp.close()',
    ]) {
      const script = `const { Checkpointer } = await import(${JSON.stringify(entry)}); const dir = ${JSON.stringify(dir)}; ${body}`
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 })
      expect(r.signal, body).toBeNull()
      expect(r.status, `${body}: ${r.stderr}`).toBe(0)
    }
  })
})
