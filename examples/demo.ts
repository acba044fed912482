// `npm run demo`: train a real model on real MNIST digits twice, once uninterrupted and once on a
// simulated spot instance that is preempted (SIGTERM, and sometimes SIGKILL with no warning) at
// random moments under taskpoint's local supervisor, and show that the preempted run resumes each
// time and ends exactly where the uninterrupted one did. Writes a chart of both loss curves.
//
//   npm run demo                         local disk, no account needed
//   npm run demo -- --backend s3         the local S3 test server (or your bucket: --uri s3://b/p)
//   npm run demo -- --backend gcs        the local GCS emulator (or --uri gs://b/p)
//   npm run demo -- --preemptions 5 --epochs 10 --seed 1
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { supervise } from '../src/engines.js'
import { lossChart, type ChartRun } from './chart.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const trainer = path.join(here, 'mnist-train.js')
const { values } = parseArgs({
  options: {
    uri: { type: 'string' },
    backend: { type: 'string', default: 'local' },
    epochs: { type: 'string', default: '8' },
    preemptions: { type: 'string', default: '3' },
    seed: { type: 'string', default: String(Math.floor(Math.random() * 1e6)) },
    out: { type: 'string', default: 'demo-out' },
  },
})
const epochs = Number(values.epochs)
const preemptions = Number(values.preemptions)
let chaos = Number(values.seed)
const random = (): number => (chaos = (Math.imul(chaos ^ (chaos >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 4294967296

interface Result {
  weights: string
  testAccuracy: number
  history: { epoch: number[]; history: Record<string, number[]> }
  batchesPerEpoch: number
}

const say = (s: string): void => console.log(s)

async function location(): Promise<{ uri: (name: string) => string; env: Record<string, string>; stop: () => Promise<void>; kept?: string }> {
  if (values.uri) return { uri: (n) => `${values.uri!.replace(/\/$/, '')}/${n}`, env: {}, stop: async () => {} }
  const stamp = Date.now().toString(36)
  if (values.backend === 'local') {
    const dir = mkdtempSync(path.join(tmpdir(), 'taskpoint-demo-'))
    return { uri: (n) => path.join(dir, n), env: {}, stop: async () => {}, kept: dir }
  }
  // The offline test servers from the repository, on 127.0.0.1.
  const { startTestServers } = await import('../test/helpers/servers.js')
  const servers = await startTestServers(values.backend === 's3' ? 's3' : 'gcs')
  if (values.backend === 's3') {
    const { CreateBucketCommand } = await import('@aws-sdk/client-s3')
    const { makeS3Client } = await import('../src/storage/s3.js')
    const env = { AWS_ENDPOINT_URL: servers.s3!, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'demo', AWS_SECRET_ACCESS_KEY: 'demo' }
    const c = makeS3Client({ clientConfig: { endpoint: servers.s3!, credentials: { accessKeyId: 'demo', secretAccessKey: 'demo' } } })
    await c.send(new CreateBucketCommand({ Bucket: 'demo' }))
    c.destroy()
    return { uri: (n) => `s3://demo/${stamp}/${n}`, env, stop: servers.stop }
  }
  return { uri: (n) => `gs://demo/${stamp}/${n}`, env: { STORAGE_EMULATOR_HOST: servers.gcs!, GOOGLE_CLOUD_PROJECT: 'demo' }, stop: servers.stop }
}

/** Runs the trainer to the end with no interruption, under the same supervisor. */
async function uninterrupted(uri: string, env: Record<string, string>): Promise<Result & { epochSeconds: number }> {
  let out = ''
  const epochTimes: number[] = []
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [trainer, '--epochs', String(epochs)], { env: { ...process.env, ...env, TASKPOINT_CHECKPOINT: uri }, stdio: ['ignore', 'pipe', 'pipe'] })
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) {
        if (line === 'training') epochTimes.push(Date.now())
        if (/^epoch /.test(line)) {
          epochTimes.push(Date.now())
          say(`  [reference] ${line}`)
        }
      }
    })
    p.on('exit', resolve)
  })
  if (code !== 0) throw new Error(`the reference run failed with exit ${code}`)
  const epochSeconds = (epochTimes.at(-1)! - epochTimes[0]!) / 1000 / Math.max(1, epochTimes.length - 1)
  return { ...(JSON.parse(out.trim().split('\n').at(-1)!) as Result), epochSeconds }
}

async function main(): Promise<void> {
  const loc = await location()
  say('taskpoint demo: MNIST (4000 train / 1000 test digits), 784-128-10 MLP with Dropout, Adam, TensorFlow.js on wasm')
  say(`checkpoints under ${loc.uri('')}\n`)
  try {
    say('1) the uninterrupted reference run')
    const ref = await uninterrupted(loc.uri('reference'), loc.env)
    say(`   test accuracy ${ref.testAccuracy.toFixed(4)}\n`)

    say(`2) the same run on a simulated spot instance, preempted ${preemptions} time(s) at random moments, under the local supervisor (taskpoint run)`)
    const marks: ChartRun['marks'] = []
    let out = ''
    const code = await supervise({
      command: process.execPath,
      args: [trainer, '--epochs', String(epochs)],
      checkpoint: loc.uri('preempted'),
      retries: 10,
      delayMs: 300,
      env: loc.env,
      stdio: 'pipe',
      log: (line) => say(`   ${line.replace(/^taskpoint run: /, 'supervisor: ')}`),
      onSpawn: (child, attempt) => {
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
        child.stderr!.on('data', (d: Buffer) => {
          for (const line of d.toString().split('\n').filter(Boolean)) {
            if (/^(Hi, looks like|=+\s*$|training$|progress: )/.test(line)) continue
            const res = /^resuming from epoch (\d+), batch (\d+)\/(\d+)/.exec(line)
            if (res) {
              const at = Number(res[1]) - 1 + Number(res[2]) / Number(res[3])
              marks.push({ at, kind: 'resume' })
            }
            const pre = /^preempted: final save at epoch (\d+), batch (\d+)\/(\d+)/.exec(line)
            if (pre) marks.push({ at: Number(pre[1]) - 1 + Number(pre[2]) / Number(pre[3]), kind: 'preempt', label: 'SIGTERM' })
            say(`   [attempt ${attempt}] ${line}`)
          }
        })
        if (attempt >= preemptions) return
        // The spot market takes the machine back: usually with a SIGTERM notice, sometimes without
        // warning. Where: somewhere in the first 15-70 % of what this attempt has left to train,
        // judged by the progress the trainer reports (not by the clock: a loaded machine must not
        // turn "preempted mid-run" into "finished before the preemption came").
        const signal: NodeJS.Signals = random() < 0.7 ? 'SIGTERM' : 'SIGKILL'
        const fraction = 0.15 + 0.55 * random()
        let target: number | undefined
        let sent = false
        child.stderr!.on('data', (d: Buffer) => {
          const text = d.toString()
          const res = /resuming from epoch (\d+), batch (\d+)\/(\d+)/.exec(text)
          const from = res ? Number(res[1]) - 1 + Number(res[2]) / Number(res[3]) : 0
          if (target === undefined && (res || /^training$/m.test(text))) target = from + (epochs - from) * fraction
          for (const p of text.matchAll(/^progress: saved epoch (\d+), batch (\d+)\/(\d+)/gm)) {
            const at = Number(p[1]) - 1 + Number(p[2]) / Number(p[3])
            if (sent || target === undefined || at < target || child.exitCode !== null) continue
            sent = true
            say(`   >>> preempting attempt ${attempt} with ${signal}`)
            if (signal === 'SIGKILL') marks.push({ at, kind: 'preempt', label: 'SIGKILL' })
            child.kill(signal)
          }
        })
      },
    })
    if (code !== 0) throw new Error(`the preempted run did not finish (exit ${code})`)
    report(ref, JSON.parse(out.trim().split('\n').at(-1)!) as Result, marks)
    // Left for a look: each run of the demo keeps its own (~60 MB).
    if (loc.kept) say(`   checkpoints kept in ${loc.kept}: list them with \`node dist/src/cli/main.js ls ${path.join(loc.kept, 'preempted')}\`, delete the directory when done`)
  } finally {
    await loc.stop()
  }
}

function report(ref: Result, run: Result, marks: ChartRun['marks']): void {
  const same = ref.weights === run.weights
  const sameHistory = JSON.stringify(ref.history) === JSON.stringify(run.history)
  say('\n3) result')
  say(`   uninterrupted: test accuracy ${ref.testAccuracy.toFixed(4)}, final weights sha256 ${ref.weights.slice(0, 16)}...`)
  say(`   preempted:     test accuracy ${run.testAccuracy.toFixed(4)}, final weights sha256 ${run.weights.slice(0, 16)}...`)
  say(
    same && sameHistory
      ? '   bit-identical final weights and loss history: the preemptions cost only the time to resume'
      : '   the final weights DIFFER from the uninterrupted run',
  )
  const svg = lossChart([
    { name: 'uninterrupted', history: ref.history.history.loss ?? [], marks: [] },
    { name: 'preempted and resumed', history: run.history.history.loss ?? [], marks },
  ])
  const file = path.resolve(String(values.out), 'loss.svg')
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, svg)
  say(`   chart of both loss curves with preemptions and resumes marked: ${file}`)
  if (!same) process.exitCode = 1
}

await main()
