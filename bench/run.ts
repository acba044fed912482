// `npm run bench`: every benchmark, one after the other, in one process per group.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
for (const b of ['checkpoint.js', 'history.js', 'memory.js', 'tfjs.js']) {
  const r = spawnSync(process.execPath, ['--max-old-space-size=8192', path.join(here, b), ...args], { stdio: 'inherit' })
  if (r.status !== 0) process.exit(r.status ?? 1)
}
