// `npm run bench`: every benchmark, one after the other, in one process per group.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
// Each file prints a markdown table at its end (BENCH_TABLE_DIR=dir also writes them to dir/<name>.md).
const started = performance.now()
for (const b of ['checkpoint.js', 'history.js', 'memory.js', 'tfjs.js']) {
  const t = performance.now()
  const r = spawnSync(process.execPath, ['--max-old-space-size=8192', path.join(here, b), ...args], { stdio: 'inherit' })
  console.log(`[${b}: ${((performance.now() - t) / 1000).toFixed(0)} s]`)
  if (r.status !== 0) process.exit(r.status ?? 1)
}
console.log(`[npm run bench: ${((performance.now() - started) / 1000).toFixed(0)} s in all]`)
