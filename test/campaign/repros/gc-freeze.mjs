// A collector frozen (SIGSTOP, a long GC pause, a suspended VM) between its last lock check and its
// deletes, longer than the lock stale time: a writer meanwhile takes its lock for stale, commits a
// checkpoint that re-uploads a chunk the collector had doomed, resolves; the collector wakes and
// deletes that chunk. Simulated in-process: the collector's storage blocks its deletes and its lock
// refreshes until released, exactly as a frozen process would.
import { Checkpointer, LocalStorage, collectGarbage, latest } from '../../../dist/src/index.js'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
const dir = mkdtempSync(path.join(tmpdir(), 'gcfreeze-'))
const s = new LocalStorage(dir)
const locks = { staleMs: 500, refreshMs: 100, waitMs: 2000 }
const P = randomBytes(2048),
  Q = randomBytes(2048)
const a = await Checkpointer.open(s, { keep: latest(1), gc: { enabled: false }, locks, repro: false, chunkSize: 1024 })
await a.write(P, { step: 1 })
await a.write(Q, { step: 2 }) // step 1 pruned: P's chunks are unreferenced now
await a.close()

let frozen = false,
  release,
  inDelete
const gate = new Promise((r) => (release = r))
const reachedDelete = new Promise((r) => (inDelete = r))
const gcStorage = Object.create(s)
gcStorage.put = async (k, b, o) => {
  if (frozen && k.startsWith('locks/')) await gate
  return s.put(k, b, o)
}
gcStorage.deleteMany = async (keys) => {
  if (keys.some((k) => k.startsWith('chunks/'))) {
    frozen = true
    inDelete()
    await gate
  }
  return s.deleteMany(keys)
}
const gc = collectGarbage(gcStorage, { minAgeMs: 0, locks })
await reachedDelete // the collector passed its last lock check and is frozen

const b = await Checkpointer.open(s, { locks, repro: false, chunkSize: 1024, onWarning: () => {} })
const info = await b.write(P, { step: 3 }) // waits for the frozen collector's lock to go stale, then commits
console.log(`write of step 3 resolved: ${info.id}`)
release() // the collector wakes up
console.log('gc:', JSON.stringify(await gc))
const c = await Checkpointer.open(s, { repro: false, onWarning: () => {} })
const got = await c.read()
console.log(
  `fresh reader: newest readable is step ${(await c.latest())?.step}, read() gave ${got && Buffer.from(got).equals(P) ? 'step 3 bytes' : got && Buffer.from(got).equals(Q) ? 'step 2 bytes (fell back)' : String(got)}; skipped: ${JSON.stringify(c.lastSkipped.map((x) => x.reason))}`,
)
