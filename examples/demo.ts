// Placeholder demo (replaced by the tfjs training demo): a loop that checkpoints its state every
// step on the local backend, is SIGKILLed at random moments, and resumes where it left off.
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Checkpointer } from '../src/index.js'

const STEPS = 400

async function worker(uri: string): Promise<void> {
  const cp = await Checkpointer.open(uri, { repro: false })
  const prev = await cp.read()
  let step = prev ? Number(Buffer.from(prev).readBigUInt64LE(0)) : 0
  let acc = prev ? Buffer.from(prev).readBigUInt64LE(8) : 1n
  for (; step < STEPS; step++) {
    acc = (acc * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn
    const b = Buffer.alloc(16)
    b.writeBigUInt64LE(BigInt(step + 1), 0)
    b.writeBigUInt64LE(acc, 8)
    await cp.write(b, { step: step + 1 })
  }
  process.stdout.write(`${acc}\n`)
  await cp.close()
}

async function main(): Promise<void> {
  if (process.argv[2] === '--worker') return worker(process.argv[3]!)
  const uri = process.argv[2] ?? mkdtempSync(path.join(tmpdir(), 'taskpoint-demo-'))
  const self = fileURLToPath(import.meta.url)
  console.log(`checkpoints in ${uri}`)
  for (let attempt = 0; ; attempt++) {
    const child = spawn(process.execPath, [self, '--worker', uri], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    const kill = attempt < 3 ? setTimeout(() => child.kill('SIGKILL'), 300 + Math.random() * 700) : undefined
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
    clearTimeout(kill)
    if (code === 0) {
      console.log(`attempt ${attempt}: finished, result ${out.trim()}`)
      break
    }
    const cp = await Checkpointer.open(uri, { repro: false })
    console.log(`attempt ${attempt}: killed; last committed step ${(await cp.latest())?.step ?? 'none'}`)
    await cp.close()
  }
}

await main()
