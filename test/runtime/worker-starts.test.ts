// Threads started ahead of need go one at a time (src/worker-starts.ts): each once the one queued
// before it runs, so that a claim's four threads do not take a training loop's core together.
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { startInTurn } from '../../src/worker-starts.js'
import { queuedThreadStarts } from '../helpers/common.js'

const started: Worker[] = []
afterEach(async () => {
  await Promise.all(started.splice(0).map((w) => w.terminate()))
})

function worker(source = 'setInterval(() => {}, 1000)'): Worker {
  const w = new Worker(source, { eval: true })
  started.push(w)
  return w
}

describe('startInTurn', () => {
  it('starts each thread only once the one before it is running', async () => {
    const online: boolean[] = []
    const seenAtStart: boolean[][] = []
    for (let i = 0; i < 4; i++) {
      startInTurn(() => {
        seenAtStart.push([...online])
        const w = worker()
        online.push(false)
        w.once('online', () => {
          online[i] = true
        })
        return w
      })
    }
    // Only the first has started so far: the queue waits for it.
    expect(seenAtStart).toEqual([[]])
    await queuedThreadStarts()
    expect(seenAtStart).toEqual([[], [true], [true, true], [true, true, true]])
    expect(online).toEqual([true, true, true, true])
  })

  it('goes on past a start that throws, one that is no longer needed, and a thread that dies as it starts', async () => {
    const calls: string[] = []
    startInTurn(() => {
      calls.push('throws')
      throw new Error('ERR_WORKER_INVALID_EXEC_ARGV')
    })
    startInTurn(() => {
      calls.push('not needed')
      return undefined
    })
    startInTurn(() => {
      calls.push('dies')
      return worker('throw new Error("boom")').on('error', () => {})
    })
    startInTurn(() => {
      calls.push('runs')
      return worker()
    })
    await queuedThreadStarts()
    expect(calls).toEqual(['throws', 'not needed', 'dies', 'runs'])
  })
})
