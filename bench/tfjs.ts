// tfjs integration benchmarks:
//  1. fit-time overhead of fitWithCheckpoints saving every 50 batches against the same fit without
//     taskpoint (the demo's model and data, each run a separate process), and of the same callback
//     with no save due, in triples with the order rotated; mean overheads with 95 % confidence
//     intervals over the triples;
//  2. a ~10M-parameter model with Adam state on the local backend: a durable save after a training
//     step (changed weights: every chunk new) against a raw write+fsync+rename of the same bytes,
//     the time training is blocked by an async save, and a verified restore into the model.
//   node dist/bench/tfjs.js [--pairs 15] [--epochs 5] [--reps 5] [--full]   (--full adds tmpfs runs)
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checkpointer } from '../src/index.js'
import { captureState, restoreState } from '../integrations/tfjs/index.js'
import { flag, fmtSpread, meanCi, MiB, ms, numArg, pct, sec, spread, Table, time } from './stats.js'
import { rawWrite } from './raw.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const trainer = path.join(here, '..', 'examples', 'mnist-train.js')
const PAIRS = numArg('pairs', 15)
const EPOCHS = numArg('epochs', 5)
const REPS = numArg('reps', 5)
const EVERY = numArg('every', 50)
const FULL = flag('full')
const table = new Table('tfjs', 'tfjs integration')

interface Fit {
  train: number
  flush: number
  /** Checkpoints the fit made. */
  saves: number
  /** Batches per epoch (the trainer reports it where it checkpoints). */
  batchesPerEpoch?: number
}

/**
 * `saves`: the callback with `every: { batches: EVERY }` (after every EVERY-th batch of the run,
 * and at the end of its last epoch); `callback`: the same callback with no save ever due (`every: { epochs }`
 * past the last epoch); `none`: plain fit.
 */
type Variant = 'saves' | 'callback' | 'none'

function timedFit(variant: Variant, base = tmpdir()): Fit {
  const dir = mkdtempSync(path.join(base, 'tp-bench-tf-'))
  try {
    const schedule = variant === 'callback' ? ['--save-every-epochs', String(EPOCHS + 1)] : ['--save-every-batches', String(EVERY)]
    const args = [trainer, '--epochs', String(EPOCHS), ...schedule, ...(variant === 'none' ? ['--no-checkpoint'] : [])]
    const r = spawnSync(process.execPath, args, { env: { ...process.env, TASKPOINT_CHECKPOINT: dir }, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`trainer failed: ${r.stderr}`)
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { trainSeconds: number; flushSeconds: number; saves?: number; batchesPerEpoch?: number }
    return { train: out.trainSeconds, flush: out.flushSeconds, saves: out.saves ?? 0, ...(out.batchesPerEpoch ? { batchesPerEpoch: out.batchesPerEpoch } : {}) }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Per-run overheads of `times` over `base` (same runs): their mean, and a cell with its 95 % CI and min–max. */
function overheadOf(times: number[], base: number[]): { mean: number; cell: string } {
  const overhead = times.map((x, i) => x / base[i]! - 1)
  const ci = meanCi(overhead)
  const s = spread(overhead)
  return { mean: ci.mean, cell: `${pct(ci.mean)} overhead, 95 % CI ${pct(ci.lo)} to ${pct(ci.hi)} (paired min–max ${pct(s.min)} to ${pct(s.max)})` }
}

function overheadRows(): void {
  const shm = existsSync('/dev/shm') ? '/dev/shm' : undefined
  const variants: { label: string; base?: string }[] = [{ label: 'local disk' }, ...(FULL && shm ? [{ label: 'tmpfs', base: shm }] : [])]
  for (const v of variants) {
    const ours: number[] = []
    const none: number[] = []
    const callbackOnly: number[] = []
    const flush: number[] = []
    const saveCounts: number[] = []
    let batchesPerEpoch: number | undefined
    const callbackSaves: number[] = []
    // Triples, the order rotated: the callback alone (no save ever due) splits what the fit pays
    // into the callback's per-batch work (its bookkeeping, and a turn of the event loop at most every 50 ms)
    // and the saves.
    const order: Variant[][] = [
      ['saves', 'none', 'callback'],
      ['none', 'callback', 'saves'],
      ['callback', 'saves', 'none'],
    ]
    for (let i = 0; i < PAIRS; i++) {
      for (const variant of order[i % 3]!) {
        if (variant === 'none') none.push(timedFit('none').train)
        else if (variant === 'callback') {
          const r = timedFit('callback', v.base)
          callbackOnly.push(r.train)
          callbackSaves.push(r.saves)
        } else {
          const r = timedFit('saves', v.base)
          ours.push(r.train)
          flush.push(r.flush)
          saveCounts.push(r.saves)
          batchesPerEpoch = r.batchesPerEpoch
        }
      }
      console.log(
        `  run ${i + 1}/${PAIRS} (${v.label}): saving ${ours.at(-1)!.toFixed(2)} s, callback alone ${callbackOnly.at(-1)!.toFixed(2)} s, without taskpoint ${none.at(-1)!.toFixed(2)} s`,
      )
    }
    // What each variant really did: a row that says "no save" must have made none.
    if (callbackSaves.some((n) => n !== 0)) throw new Error(`the callback-alone fits saved (${callbackSaves.join(', ')} checkpoints)`)
    const batches = EPOCHS * (batchesPerEpoch ?? 0)
    const due = Math.floor(batches / EVERY) + (batches % EVERY === 0 ? 0 : 1)
    if (saveCounts.some((n) => n !== due)) throw new Error(`the saving fits made ${saveCounts.join(', ')} checkpoints, not the ${due} their schedule says`)
    const saving = overheadOf(ours, none)
    const saved = spread(saveCounts)
    table.add({
      what: `fit time, every: { batches: ${EVERY} } (${v.label}; ${saved.min === saved.max ? saved.min : `${saved.min}–${saved.max}`} saves per fit of ${batches} batches: after every ${EVERY}th and at the end) vs the same fit without taskpoint (demo model, ${EPOCHS} epochs, ${PAIRS} runs of each, order rotated)`,
      ours: fmtSpread(ours, sec),
      baseline: fmtSpread(none, sec),
      ratio: saving.cell,
      goal: '≤ 2 %',
      met: saving.mean <= 0.02,
    })
    table.add({
      what: `of which the callback alone: the same fit with the checkpoint callback but no save due (0 saves: its per-batch bookkeeping, the shuffle mirror, a turn of the event loop at most every 50 ms, and the task around it; ${v.label}, same runs; for information)`,
      ours: fmtSpread(callbackOnly, sec),
      baseline: fmtSpread(none, sec),
      ratio: overheadOf(callbackOnly, none).cell,
      goal: '',
    })
    table.add({
      what: `then waiting for the last save to be durable (once, at the end; ${v.label})`,
      ours: fmtSpread(
        flush.map((x) => x * 1000),
        ms,
      ),
      baseline: '',
      ratio: '',
      goal: '',
    })
  }
}

async function bigModelRows(): Promise<void> {
  // ~10M parameters: 1000 -> 3000 -> 2300 -> 10 dense layers, Adam (two slots per weight).
  await tf.setBackend('wasm')
  const model = tf.sequential()
  model.add(tf.layers.dense({ inputShape: [1000], units: 3000, activation: 'relu' }))
  model.add(tf.layers.dense({ units: 2300, activation: 'relu' }))
  model.add(tf.layers.dense({ units: 10 }))
  model.compile({ optimizer: tf.train.adam(1e-4), loss: 'meanSquaredError' })
  const x = tf.randomNormal([8, 1000])
  const y = tf.randomNormal([8, 10])
  const step = (): Promise<unknown> => model.fit(x, y, { epochs: 1, batchSize: 8, verbose: 0 })
  await step() // creates Adam's slots
  const params = model.countParams()
  const dir = mkdtempSync(path.join(tmpdir(), 'tp-bench-10m-'))
  const rawDir = mkdtempSync(path.join(tmpdir(), 'tp-bench-10m-raw-'))
  const cp = await Checkpointer.open(dir, { repro: false })
  try {
    // Warm: the first save writes everything and allocates the snapshot buffers.
    {
      const { arrays, info } = await captureState(model)
      await cp.write({ arrays, json: { info } })
    }
    const saves: number[] = []
    const raws: number[] = []
    const written: number[] = []
    const totals: number[] = []
    for (let i = 0; i < REPS; i++) {
      await step() // a training step: every weight and both Adam slots change
      const ours = async (): Promise<void> => {
        saves.push(
          await time(async () => {
            const { arrays, info } = await captureState(model)
            await cp.write({ arrays, json: { info } })
          }),
        )
        written.push(cp.lastUpload?.uploaded ?? Number.NaN)
        totals.push(cp.lastUpload?.total ?? Number.NaN)
      }
      const raw = async (): Promise<void> => {
        // The same bytes, gathered untimed (a raw writer has them in one buffer), then written durably.
        const { arrays } = await captureState(model)
        const parts = Object.values(arrays).map((a) => {
          const v = (ArrayBuffer.isView(a) ? a : (a as { data: ArrayBufferView }).data) as ArrayBufferView
          return new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
        })
        const all = Buffer.concat(parts)
        raws.push(await time(() => rawWrite(rawDir, 'raw', all)))
      }
      if (i % 2 === 0) {
        await ours()
        await raw()
      } else {
        await raw()
        await ours()
      }
    }
    const mb = (spread(totals).median / MiB).toFixed(0)
    table.paired(
      `${(params / 1e6).toFixed(1)}M-param model + Adam (${mb} MiB), durable save after a training step (${(spread(written).median / MiB).toFixed(1)} MiB written, min–max ${(Math.min(...written) / MiB).toFixed(1)}–${(Math.max(...written) / MiB).toFixed(1)}) vs raw write+fsync+rename of the same bytes`,
      saves,
      raws,
      { unit: ms, ratio: (a, b) => a / b, goal: '' },
    )

    const blocked: number[] = []
    const restores: number[] = []
    for (let i = 0; i < REPS; i++) {
      await step()
      blocked.push(
        await time(async () => {
          const s = await captureState(model)
          cp.writeAsync({ arrays: s.arrays, json: { info: s.info } })
        }),
      )
      await cp.flush()
      restores.push(
        await time(async () => {
          const st = (await cp.readState())!
          await restoreState(tf, model, st.arrays, (st.json as { info: Parameters<typeof restoreState>[3] }).info)
        }),
      )
    }
    table.add({
      what: `${(params / 1e6).toFixed(1)}M-param model + Adam: async save after a training step, time training is blocked`,
      ours: fmtSpread(blocked, ms),
      baseline: '',
      ratio: '',
      goal: '',
    })
    table.add({ what: `${(params / 1e6).toFixed(1)}M-param model + Adam: verified restore into the model`, ours: fmtSpread(restores, ms), baseline: '', ratio: '', goal: '' })
  } finally {
    await cp.close()
    rmSync(dir, { recursive: true, force: true })
    rmSync(rawDir, { recursive: true, force: true })
  }
}

async function main(): Promise<void> {
  console.log(`tfjs benchmarks: demo model (784-128-10, 4000 MNIST digits, ${EPOCHS} epochs, wasm), ${PAIRS} runs of each fit variant; 10M-param model, ${REPS} repetitions`)
  const started = performance.now()
  if (PAIRS > 0) overheadRows()
  await bigModelRows()
  table.print([
    `Each fit ran as a separate process, in triples (saving, callback alone, plain fit) whose order rotates; an overhead is (with / without − 1) of the fit time before the final flush, paired within a triple, and its mean is given with a 95 % t-interval over the triples. The 10M-param rows: ${REPS} repetitions, each after one training step.`,
    `Took ${((performance.now() - started) / 1000).toFixed(0)} s.`,
  ])
}

await main()
