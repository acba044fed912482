import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { Checkpointer } from '../../src/index.js'
import { payload } from '../fixtures/crash-payload.js'
import { allBackends, s3Config, type Backend } from '../helpers/backends.js'

// SIGKILL a real writer process at random instants, many times, and check after every kill that
// the newest committed checkpoint reads back with exactly the bytes it was written with and that
// no checkpoint the writer had seen committed was lost. `npm run test:crash` runs 200 kills per backend.
const KILLS = Number(process.env.CRASH_KILLS ?? 12)
const writer = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'test', 'fixtures', 'crash-writer.js')

async function runAndKill(uri: string, env: Record<string, string>, seed: string, mode: string, killAfterMs: number, afterCommit: boolean): Promise<number> {
  const child = spawn(process.execPath, [writer, uri, seed, mode], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
  // Kill at a random instant after the writer has started writing (or earlier, during startup).
  // Every other kill comes only after the writer confirmed a commit, so the run makes progress
  // however slow the machine is; the others may land anywhere, startup included.
  const mark = afterCommit ? 'committed' : 'start'
  const started = new Promise<void>((r) => child.stdout.on('data', () => out.includes(mark) && r()))
  await Promise.race([started, exited, new Promise((r) => setTimeout(r, afterCommit ? 60_000 : 5000))])
  await new Promise((r) => setTimeout(r, killAfterMs))
  child.kill('SIGKILL')
  const code = await exited
  if (code !== null && !out.includes('committed')) throw new Error(`writer died on its own (${code}): ${err}`)
  const steps = [...out.matchAll(/committed (\d+)/g)].map((m) => Number(m[1]))
  return steps.length ? Math.max(...steps) : -1
}

describe.each(allBackends().map((b) => [b.name, b] as const))('crash consistency on %s', (_n, backend: Backend) => {
  it(
    `${KILLS} SIGKILLs while writing: latest always exact, nothing committed lost`,
    async () => {
      const { uri, env } = await backend.freshUri()
      const seed = randomBytes(4).toString('hex')
      let confirmed = -1
      let kills = 0
      const resumedFrom: number[] = []
      for (let i = 0; i < KILLS; i++) {
        const mode = i % 2 === 0 ? 'sync' : 'async'
        const reported = await runAndKill(uri, env, seed, mode, Math.random() * 400, i % 4 < 2)
        kills++
        confirmed = Math.max(confirmed, reported)
        const cp = await Checkpointer.open(uri, { repro: false, onWarning: () => {}, storage: storageOptions(env) })
        const info = await cp.latest()
        if (confirmed >= 0) {
          expect(info, `kill ${i}: a confirmed checkpoint must exist`).toBeDefined()
          expect(info!.step, `kill ${i}: confirmed step ${confirmed} lost`).toBeGreaterThanOrEqual(confirmed)
        }
        if (info) {
          const bytes = await cp.read()
          expect(Buffer.from(bytes!).equals(Buffer.from(payload(seed, info.step))), `kill ${i}: bytes of step ${info.step}`).toBe(true)
          expect(cp.lastSkipped, `kill ${i}: no committed checkpoint may be damaged`).toEqual([])
          resumedFrom.push(info.step)
        }
        await cp.close()
      }
      console.log(`[crash] ${backend.name}: ${kills} kills, last confirmed step ${confirmed}, resumed from ${resumedFrom.length} checkpoints`)
      expect(kills).toBe(KILLS)
      expect(confirmed).toBeGreaterThan(0)
    },
    60_000 + KILLS * 4000,
  )
})

function storageOptions(env: Record<string, string>) {
  // The child reads endpoints from its environment; the checker gets the same through options.
  const o: Record<string, unknown> = {}
  if (env.AWS_ENDPOINT_URL) {
    o.s3 = { clientConfig: s3Config(env.AWS_ENDPOINT_URL) }
  }
  if (env.STORAGE_EMULATOR_HOST) o.gcs = { clientOptions: { apiEndpoint: env.STORAGE_EMULATOR_HOST, projectId: 'taskpoint-test' } }
  return o
}
