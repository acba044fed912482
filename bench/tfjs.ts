// tfjs integration benchmarks, side by side in one run:
//  1. fit-time overhead of an async checkpoint at every epoch end vs no checkpointing, on the
//     demo's model and data (separate processes, alternating, median of REPS each);
//  2. save and restore time for a ~10M-parameter model with Adam state, on the local backend.
import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checkpointer } from '../src/index.js'
import { captureState, restoreState } from '../integrations/tfjs/index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const trainer = path.join(here, '..', 'examples', 'mnist-train.js')
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const REPS = arg('reps', 3)
const EPOCHS = arg('epochs', 8)
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

function fitSeconds(withCheckpoints: boolean, base = tmpdir()): { train: number; flush: number } {
  const dir = mkdtempSync(path.join(base, 'tp-bench-tf-'))
  const args = [trainer, '--epochs', String(EPOCHS), '--save-every-batches', '0', ...(withCheckpoints ? [] : ['--no-checkpoint'])]
  const r = spawnSync(process.execPath, args, { env: { ...process.env, TASKPOINT_CHECKPOINT: dir }, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`trainer failed: ${r.stderr}`)
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { trainSeconds: number; flushSeconds: number }
  return { train: out.trainSeconds, flush: out.flushSeconds }
}

async function main(): Promise<void> {
  console.log(`tfjs benchmarks: demo model (784-128-10, 4000 MNIST digits, ${EPOCHS} epochs, wasm), median of ${REPS}`)
  // Three variants in rotating order, so none always runs first (the machine drifts between runs):
  // no checkpointing, checkpoints on the local disk, and (where there is one) on tmpfs, which
  // separates the cost of taskpoint's own work from the cost of the disk flushes.
  const shm = existsSync('/dev/shm') ? '/dev/shm' : undefined
  const variants: { name: string; run: () => { train: number; flush: number } }[] = [
    { name: 'none', run: () => fitSeconds(false) },
    { name: 'disk', run: () => fitSeconds(true) },
    ...(shm ? [{ name: 'tmpfs', run: () => fitSeconds(true, shm) }] : []),
  ]
  const times: Record<string, number[]> = {}
  const flush: number[] = []
  for (let i = 0; i < REPS; i++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(i + k) % variants.length]!
      const r = v.run()
      ;(times[v.name] ??= []).push(r.train)
      if (v.name === 'disk') flush.push(r.flush)
    }
  }
  const p = median(times.none!)
  const rows: string[] = []
  for (const v of variants.slice(1)) {
    const c = median(times[v.name]!)
    rows.push(
      `| fit time, async save every epoch (${v.name === 'disk' ? 'local disk' : 'tmpfs'}) vs none (demo model) | ${c.toFixed(2)} s | ${p.toFixed(2)} s | ${(((c - p) / p) * 100).toFixed(1)} % overhead | ≤ 2 % |`,
    )
  }
  rows.push(`| then waiting for the last save to be durable (once, at the end) | ${(median(flush) * 1000).toFixed(0)} ms | | | |`)
  for (const [k, xs] of Object.entries(times)) console.log(`  ${k}: ${xs.map((x) => x.toFixed(2)).join(', ')} s`)

  // ~10M parameters: 1000 -> 3000 -> 2300 -> 10 dense layers, Adam (two slots per weight).
  await tf.setBackend('wasm')
  const model = tf.sequential()
  model.add(tf.layers.dense({ inputShape: [1000], units: 3000, activation: 'relu' }))
  model.add(tf.layers.dense({ units: 2300, activation: 'relu' }))
  model.add(tf.layers.dense({ units: 10 }))
  model.compile({ optimizer: tf.train.adam(1e-4), loss: 'meanSquaredError' })
  await model.fit(tf.randomNormal([8, 1000]), tf.randomNormal([8, 10]), { epochs: 1, verbose: 0 }) // creates Adam's slots
  const params = model.countParams()
  const cp = await Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-bench-10m-')), { repro: false })
  const saves: number[] = []
  const blocked: number[] = []
  const restores: number[] = []
  let bytes = 0
  for (let i = 0; i < REPS + 1; i++) {
    let t = performance.now()
    const { arrays, info } = await captureState(model)
    const w = await cp.write({ arrays, json: { info } })
    if (i > 0) saves.push(performance.now() - t)
    bytes = w.size
    t = performance.now()
    const s2 = await captureState(model)
    cp.writeAsync({ arrays: s2.arrays, json: { info: s2.info } })
    if (i > 0) blocked.push(performance.now() - t)
    await cp.flush()
    t = performance.now()
    const st = (await cp.readState())!
    await restoreState(tf, model, st.arrays, (st.json as { info: Parameters<typeof restoreState>[3] }).info)
    if (i > 0) restores.push(performance.now() - t)
  }
  await cp.close()
  const mb = (bytes / 1024 / 1024).toFixed(0)
  rows.push(`| ${(params / 1e6).toFixed(1)}M-param model + Adam (${mb} MiB): durable save (sync write) | ${median(saves).toFixed(0)} ms | | | |`)
  rows.push(`| ${(params / 1e6).toFixed(1)}M-param model + Adam: async save, time training is blocked | ${median(blocked).toFixed(0)} ms | | | |`)
  rows.push(`| ${(params / 1e6).toFixed(1)}M-param model + Adam: verified restore into the model | ${median(restores).toFixed(0)} ms | | | |`)
  console.log('\n| benchmark | taskpoint | baseline | ratio | goal |\n|---|---|---|---|---|')
  for (const r of rows) console.log(r)
}

await main()
