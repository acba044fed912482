import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { BufferPool } from '../../src/checkpoint/snapshot.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const saveMany = path.join(here, '..', '..', 'dist', 'test', 'fixtures', 'save-many.js')

describe('bounded resources', () => {
  it('save and restore of 1,500 files work under ulimit -n 128 (one descriptor per file in flight, not per file)', () => {
    const tmp = mkdtempSync(path.join(tmpdir(), 'tp-fds-'))
    const src = path.join(tmp, 'src')
    for (let d = 0; d < 15; d++) {
      mkdirSync(path.join(src, `d${d}`), { recursive: true })
      for (let f = 0; f < 100; f++) writeFileSync(path.join(src, `d${d}`, `f${f}`), `${d}/${f}`)
    }
    const r = spawnSync('bash', ['-c', `ulimit -n 128 && exec "${process.execPath}" "${saveMany}" "${tmp}/store" "${src}" "${tmp}/dst"`], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({ files: 1500, restored: 1500 })
    expect(readFileSync(path.join(tmp, 'dst', 'd14', 'f99'), 'utf8')).toBe('14/99')
  })

  it('the snapshot pool never holds more than two buffers, whatever the sizes and the order of use', () => {
    const pool = new BufferPool(2)
    const seen = new Set<ArrayBufferLike>()
    let pending: Uint8Array | undefined
    let inflight: Uint8Array | undefined
    let x = 12345
    const rnd = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
    for (let i = 0; i < 5000; i++) {
      const r = rnd()
      if (r < 0.6) {
        // writeAsync: the waiting snapshot's buffer goes back, a new one is taken
        pool.give(pending)
        const size = 1 + Math.floor(rnd() * (r < 0.3 ? 4096 : 65536) * (1 + i / 100))
        pending = pool.take(size)
        expect(pending.byteLength).toBeGreaterThanOrEqual(size)
        seen.add(pending.buffer)
      } else if (r < 0.8 && !inflight && pending) {
        inflight = pending // a commit starts
        pending = undefined
      } else if (inflight) {
        pool.give(inflight) // a commit ends
        inflight = undefined
      }
      expect(seen.size).toBeLessThanOrEqual(2)
    }
  })
})
