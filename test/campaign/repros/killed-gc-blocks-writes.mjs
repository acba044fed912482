// A collector SIGKILLed while holding its exclusive lock: how long does the next write() wait?
import { Checkpointer, LocalStorage } from '../../../dist/src/index.js'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
const dir = mkdtempSync(path.join(tmpdir(), 'gclock-'))
const s = new LocalStorage(dir)
// what acquireExclusive writes, left behind by a killed `taskpoint gc`
await s.put('locks/exclusive-gcdead-0123456789abcdef.json', Buffer.from(JSON.stringify({ kind: 'exclusive', owner: 'gcdead', pid: 999999 })))
const cp = await Checkpointer.open(dir, { repro: false })
const t = performance.now()
const r = await Promise.race([cp.write(Buffer.from('x'), { step: 1 }).then(() => 'resolved'), new Promise((r) => setTimeout(() => r('still waiting'), 8000))])
console.log(`write() after a killed collector: ${r} after ${Math.round(performance.now() - t)} ms`)
process.exit(0)
