// Flyte's `use_checkpoint` example, in TypeScript: a loop of n iterations that records `i + 1` at
// every step and fails with a RecoverableError every n / RETRIES iterations. It completes within
// its retries, because each attempt resumes from the checkpoint instead of from zero.
//
//   node dist/examples/use-checkpoint.js [URI]      (default: a temp dir; s3://… and gs://… work too)
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { RecoverableError, currentContext, task } from '../src/index.js'

const RETRIES = 3

export const useCheckpoint = (checkpoint: string) =>
  task({ name: 'use_checkpoint', retries: RETRIES, checkpoint, retryDelay: { minMs: 100, maxMs: 200 } }, async (nIterations: number) => {
    const cp = currentContext().checkpoint
    const prev = await cp.read()
    const start = prev ? Number(Buffer.from(prev).toString()) : 0
    // A deterministic failure every failureInterval iterations, to show it completes within its retries.
    const failureInterval = Math.floor(nIterations / RETRIES)
    let index = start
    for (; index < nIterations; index++) {
      if (index > start && index % failureInterval === 0) {
        throw new RecoverableError(`Failed at iteration ${index}, failure_interval ${failureInterval}`)
      }
      await cp.write(Buffer.from(String(index + 1)))
    }
    return index - 1
  })

if (process.argv[1] && path.resolve(process.argv[1]).replace(/\.ts$/, '.js').endsWith(path.join('examples', 'use-checkpoint.js'))) {
  const uri = process.argv[2] ?? mkdtempSync(path.join(tmpdir(), 'use-checkpoint-'))
  const result = await useCheckpoint(uri)(10)
  console.log(`use_checkpoint(10) = ${result} (checkpoints in ${uri})`)
}
