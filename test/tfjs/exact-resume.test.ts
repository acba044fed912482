import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { TrainConfig } from '../fixtures/tfjs-train.js'
import { gcsBackend, s3Backend } from '../helpers/backends.js'

// Real processes, really killed: a run preempted (SIGKILL or SIGTERM) and resumed in a fresh
// process must end with final weights bit-identical to an uninterrupted run.
const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'test', 'fixtures', 'tfjs-train.js')

interface Result {
  weights: string
  history: { epoch: number[]; history: Record<string, number[]> }
  resumedFrom: { epoch: number; batch: number } | null
}

interface Attempt {
  p: ChildProcess
  stderr: string
  stdout: string
  done: Promise<number | null>
}

type Where = { uri: string; env: Record<string, string> }
type Storage = 'local' | 's3' | 'gcs'

async function where(storage: Storage = 'local'): Promise<Where> {
  if (storage === 'local') return { uri: mkdtempSync(path.join(tmpdir(), 'tp-tf-')), env: {} }
  return (storage === 's3' ? s3Backend() : gcsBackend()).freshUri()
}

function launch(config: TrainConfig, at: Where): Attempt {
  const p = spawn(process.execPath, [script, JSON.stringify(config)], { env: { ...process.env, ...at.env, TASKPOINT_CHECKPOINT: at.uri }, stdio: ['ignore', 'pipe', 'pipe'] })
  const a: Attempt = { p, stderr: '', stdout: '', done: new Promise((r) => p.on('exit', (c, s) => r(c ?? (s ? -1 : null)))) }
  p.stdout!.on('data', (d) => (a.stdout += d))
  p.stderr!.on('data', (d) => (a.stderr += d))
  return a
}

const saves = (a: Attempt): { epoch: number; batch: number }[] => [...a.stderr.matchAll(/saved (\d+) (\d+)/g)].map((m) => ({ epoch: Number(m[1]), batch: Number(m[2]) }))

async function until(cond: () => boolean, a: Attempt, ms = 60_000): Promise<boolean> {
  const t = Date.now()
  let exited = false
  void a.done.then(() => (exited = true))
  while (!cond()) {
    if (exited || Date.now() - t > ms) return false
    await new Promise((r) => setTimeout(r, 5))
  }
  return true
}

async function uninterrupted(config: TrainConfig, storage?: Storage): Promise<Result> {
  const a = launch(config, await where(storage))
  const code = await a.done
  if (code !== 0) throw new Error(`uninterrupted run failed (${code}): ${a.stderr}`)
  return JSON.parse(a.stdout.trim().split('\n').at(-1)!) as Result
}

/** Kills the run with each signal in turn at a save point chosen by `when`, then lets it finish. */
async function preempted(
  config: TrainConfig,
  signals: NodeJS.Signals[],
  when: (s: { epoch: number; batch: number }[]) => boolean,
  storage?: Storage,
): Promise<{ result: Result; resumes: Result['resumedFrom'][]; codes: (number | null)[] }> {
  const uri = await where(storage)
  const codes: (number | null)[] = []
  for (const sig of signals) {
    const a = launch(config, uri)
    const hit = await until(() => when(saves(a)), a)
    if (hit) {
      await new Promise((r) => setTimeout(r, Math.random() * 30))
      a.p.kill(sig)
    }
    codes.push(await a.done)
  }
  const last = launch(config, uri)
  const code = await last.done
  if (code !== 0) throw new Error(`final run failed (${code}): ${last.stderr}`)
  const result = JSON.parse(last.stdout.trim().split('\n').at(-1)!) as Result
  return { result, resumes: [result.resumedFrom], codes }
}

const base: TrainConfig = { backend: 'cpu', optimizer: 'adam', shuffle: true, dropout: true, mode: 'fit', every: 'epoch', epochs: 6, samples: 256, batchSize: 32, seed: 7 }

const configs: [string, TrainConfig, (s: { epoch: number; batch: number }[]) => boolean, Storage?][] = [
  ['fit, shuffle, Dropout, Adam, epoch saves, killed after epoch 2', base, (s) => s.some((x) => x.epoch >= 2)],
  ['fit, shuffle, Dropout, Adam, batch saves, killed mid-epoch', { ...base, every: { batches: 3 } }, (s) => s.some((x) => x.epoch >= 1 && x.batch > 0)],
  [
    'fit with validationSplit, shuffle, Dropout, Adam, batch saves, killed mid-epoch',
    { ...base, validationSplit: 0.25, every: { batches: 2 } },
    (s) => s.some((x) => x.epoch >= 1 && x.batch > 0),
  ],
  [
    'fit, no shuffle, momentum SGD, batch saves, killed mid-epoch',
    { ...base, shuffle: false, dropout: false, optimizer: 'momentum', every: { batches: 2 } },
    (s) => s.some((x) => x.epoch >= 2 && x.batch > 0),
  ],
  [
    'fitDataset (seeded shuffle), Dropout, Adam, batch saves, killed mid-epoch',
    { ...base, mode: 'dataset', every: { batches: 3 } },
    (s) => s.some((x) => x.epoch >= 1 && x.batch > 0),
  ],
  [
    'fitDataset with batchesPerEpoch (one iterator for the run), Adam, batch saves',
    { ...base, mode: 'dataset', batchesPerEpoch: 5, every: { batches: 2 } },
    (s) => s.some((x) => x.epoch >= 1 && x.batch > 0),
  ],
  ['fitDataset, plain SGD, epoch saves', { ...base, mode: 'dataset', optimizer: 'sgd', dropout: false }, (s) => s.some((x) => x.epoch >= 3)],
  [
    'fit on the wasm backend, shuffle, Dropout, RMSProp, batch saves',
    { ...base, backend: 'wasm', optimizer: 'rmsprop', every: { batches: 4 } },
    (s) => s.some((x) => x.epoch >= 2 && x.batch > 0),
  ],
  // The cloud SDKs draw on Math.random during background uploads; training must not notice.
  ['fit, shuffle, Dropout, Adam, batch saves, checkpoints on S3', { ...base, every: { batches: 3 } }, (s) => s.some((x) => x.epoch >= 1 && x.batch > 0), 's3'],
  ['fitDataset, Dropout, Adam, batch saves, checkpoints on GCS', { ...base, mode: 'dataset', every: { batches: 3 } }, (s) => s.some((x) => x.epoch >= 1 && x.batch > 0), 'gcs'],
]

describe.each(configs)('exact resume: %s', (_name, config, when, storage) => {
  it('SIGKILL then SIGTERM, resumed in fresh processes: final weights bit-identical', async () => {
    const ref = await uninterrupted(config, storage)
    const run = await preempted(config, ['SIGKILL', 'SIGTERM'], when, storage)
    expect(run.codes[0]).toBe(-1) // killed
    expect(run.codes[1]).toBe(143) // saved and exited with the preemption status
    expect(run.result.resumedFrom).not.toBeNull()
    expect(run.result.weights).toBe(ref.weights)
    expect(run.result.history).toEqual(ref.history)
    if (config.validationSplit) expect(ref.history.history.val_loss).toHaveLength(config.epochs)
  }, 180_000)
})
