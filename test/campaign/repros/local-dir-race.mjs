// LocalStorage.delete removes directories left empty; a put into the same directory at the same
// time (mkdir, then open a temp file in it) finds it gone and fails with NotFound, which is not
// retried: a writer taking its lock while a collector releases its own gets a failed write().
// Found by the campaign on local disk (seed 1946869839 with --pauses: "write 4000038 rejected:
// NotFound [local put locks/shared-….json] no such object").
import { LocalStorage } from '../../../dist/src/index.js'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
const dir = mkdtempSync(path.join(tmpdir(), 'dirrace-'))
const a = new LocalStorage(dir),
  b = new LocalStorage(dir)
let failures = 0,
  puts = 0
const releaser = (async () => {
  for (let i = 0; i < 3000; i++) {
    try {
      puts++
      await a.put('locks/exclusive.json', Buffer.from('x'))
      await a.delete('locks/exclusive.json')
    } catch (e) {
      failures++
      if (failures === 1) console.log(`first failure: ${e.code} ${e.message}`)
    }
  }
})()
const taker = (async () => {
  for (let i = 0; i < 3000; i++) {
    try {
      puts++
      await b.put(`locks/shared-${i}.json`, Buffer.from('y'))
      await b.delete(`locks/shared-${i}.json`)
    } catch (e) {
      failures++
      if (failures === 1) console.log(`first failure: ${e.code} ${e.message}`)
    }
  }
})()
await Promise.all([releaser, taker])
console.log(`${failures} of ${puts} puts failed`)
