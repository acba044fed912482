// One fresh process's first durable save, for `node dist/bench/checkpoint.js`: a restarted job's
// first checkpoint pays for starting the hashing threads and for fresh buffers, which saves later in
// a process do not. Prints {"ours": ms, "raw": ms}; the order of the two alternates by argument.
//   node dist/bench/first-write.js <dir> <mib> ours-first|raw-first
import { randomFillSync } from 'node:crypto'
import * as fs from 'node:fs/promises'
import path from 'node:path'
import { Checkpointer } from '../src/index.js'
import { rawWrite } from './raw.js'

const [dir = '', mibArg = '256', order = 'ours-first'] = process.argv.slice(2)
const data = new Uint8Array(Number(mibArg) * 1024 * 1024)
for (let o = 0; o < data.byteLength; o += 64 << 20) randomFillSync(data, o, Math.min(64 << 20, data.byteLength - o))

const time = async (fn: () => Promise<unknown>): Promise<number> => {
  const t = performance.now()
  await fn()
  return performance.now() - t
}
const ours = async (): Promise<number> => {
  const cp = await Checkpointer.open(path.join(dir, 'cp'), { repro: false, onWarning: () => {} })
  const t = await time(() => cp.write(data))
  await cp.close()
  return t
}
const raw = async (): Promise<number> => {
  await fs.mkdir(path.join(dir, 'raw'), { recursive: true })
  return time(() => rawWrite(path.join(dir, 'raw'), 'state', data))
}
const out = order === 'raw-first' ? { raw: await raw(), ours: await ours() } : { ours: await ours(), raw: await raw() }
console.log(JSON.stringify(out))
