// What the commit lock (src/checkpoint/locks.ts) costs a fleet job's checkpoints: requests per
// commit by kind, and the time of one lock taken and released beside the time of a whole commit,
// on the S3 test server, for a state the size of the fleet example's (784-128-10 MLP with Adam).
//
//   npm run build && node dist/bench/commit-lock.js [--commits 32] [--reps 3]
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3'
import { parseArgs } from 'node:util'
import { Checkpointer } from '../src/checkpoint/checkpointer.js'
import { acquireShared } from '../src/checkpoint/locks.js'
import { openStorage } from '../src/storage/resolve.js'
import type { Storage } from '../src/storage/types.js'
import { startTestServers } from '../test/helpers/servers.js'

const { values } = parseArgs({ options: { commits: { type: 'string', default: '32' }, reps: { type: 'string', default: '3' }, bytes: { type: 'string', default: '1240000' } } })
const N = Number(values.commits)
const SIZE = Number(values.bytes)
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

/** The storage with every call counted by method. */
function counted(s: Storage, counts: Record<string, number>): Storage {
  const methods = new Set(['put', 'get', 'head', 'list', 'delete', 'deleteMany'])
  return new Proxy(s, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown
      if (typeof v !== 'function') return v
      const f = v as (...a: unknown[]) => unknown
      if (typeof key === 'string' && methods.has(key))
        return (...a: unknown[]) => {
          counts[key] = (counts[key] ?? 0) + 1
          return f.apply(target, a)
        }
      return f.bind(target)
    },
  })
}

const servers = await startTestServers('s3')
Object.assign(process.env, { AWS_ENDPOINT_URL: servers.s3!, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'bench', AWS_SECRET_ACCESS_KEY: 'bench' })
const c = new S3Client({ endpoint: servers.s3!, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' } })
await c.send(new CreateBucketCommand({ Bucket: 'commitlock' }))
c.destroy()
try {
  console.log(`${N} commits of ${SIZE} bytes (each a new chunk) on the S3 test server, ${values.reps} repetitions`)
  for (let rep = 0; rep < Number(values.reps); rep++) {
    const raw = await openStorage(`s3://commitlock/rep${rep}`)
    const counts: Record<string, number> = {}
    const cp = await Checkpointer.open(counted(raw, counts), { repro: false })
    const buf = Buffer.alloc(SIZE)
    const commitMs: number[] = []
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < SIZE; j += 4096) buf[j] = (i * 7 + j) & 255
      const t = performance.now()
      await cp.write(buf, { step: i })
      commitMs.push(performance.now() - t)
    }
    await cp.close()
    const lockMs: number[] = []
    for (let i = 0; i < N; i++) {
      const t = performance.now()
      const lock = await acquireShared(raw, 'bench')
      await lock.release()
      lockMs.push(performance.now() - t)
    }
    await raw.close()
    const per = Object.entries(counts)
      .map(([k, v]) => `${k} ${(v / N).toFixed(1)}`)
      .join(', ')
    console.log(`rep ${rep + 1}: commit median ${median(commitMs).toFixed(1)} ms; lock taken + released median ${median(lockMs).toFixed(1)} ms; requests per commit: ${per}`)
  }
} finally {
  await servers.stop()
}
