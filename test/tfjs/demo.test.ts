import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const demo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'examples', 'demo.js')

describe('the demo (README first command)', () => {
  it('trains, is preempted, resumes, ends bit-identical to the uninterrupted run, writes the chart', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'tp-demo-'))
    const r = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const p = spawn(process.execPath, [demo, '--epochs', '3', '--preemptions', '2', '--seed', '11', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      p.stdout.on('data', (d) => (stdout += d))
      p.on('exit', (code) => resolve({ code, stdout }))
    })
    expect(r.code, r.stdout).toBe(0)
    expect(r.stdout).toMatch(/>>> preempting attempt 0/)
    expect(r.stdout).toMatch(/\[attempt 1\] resuming from epoch/)
    expect(r.stdout).toMatch(/bit-identical final weights and loss history/)
    expect(existsSync(path.join(out, 'loss.svg'))).toBe(true)
  }, 180_000)
})
