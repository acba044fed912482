// Hostile review of write() reading the caller's memory chunk by chunk into pooled chunk buffers
// (3bd0310), CRC32s from the hashing threads (5980e69) and hashing threads started ahead of the first chunk
// (d76b9be). Each test here failed on d76b9be for the reason its name gives.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Checkpointer, type Storage } from '../../src/index.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { KiB, MiB, quiet, sha } from '../helpers/common.js'

afterAll(closeEnforcingProxies)

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * Counts SharedArrayBuffers of `size` bytes made while `fn` runs (chunk buffers are; writeAsync's
 * growable snapshot buffers are made through a reference taken at load time, so never counted).
 */
async function countingShared<T>(size: number, fn: (count: () => number) => Promise<T>): Promise<T> {
  const Original = globalThis.SharedArrayBuffer
  let made = 0
  globalThis.SharedArrayBuffer = new Proxy(Original, {
    construct(target, args: [number, ...unknown[]]) {
      if (args[0] === size) made++
      return Reflect.construct(target, args)
    },
  })
  try {
    return await fn(() => made)
  } finally {
    globalThis.SharedArrayBuffer = Original
  }
}

/** `s` with chunk puts held for `ms` each and counted while in flight; `first` runs at the first one. */
function slowChunkPuts(s: Storage, ms: number, first: () => void = () => {}) {
  const storage = Object.create(s) as Storage
  const state = { inFlight: 0, started: 0 }
  storage.put = async (key, body, o) => {
    if (!key.startsWith('chunks/')) return s.put(key, body, o)
    state.inFlight++
    if (state.started++ === 0) first()
    try {
      await sleep(ms)
      return await s.put(key, body, o)
    } finally {
      state.inFlight--
    }
  }
  return { storage, state }
}

describe.each(allBackends().map((b) => [b.name, b] as const))('write review on %s', (_name, backend: Backend) => {
  it('repeated write()s reuse the chunk buffers instead of dropping some each time (dropped shared memory piles up as RSS)', async () => {
    // 21 chunk buffers in flight (concurrency 20 + 1) of 4 MiB: 84 MiB, more than the 64 MiB kept.
    const chunkSize = 4 * MiB
    const { storage } = slowChunkPuts(await backend.open(), 50)
    const cp = await Checkpointer.open(storage, { chunkSize, concurrency: 20, ...quiet })
    const data = new Uint8Array(21 * chunkSize)
    const fresh = (step: number): Uint8Array => {
      // Every chunk new and unlike the others, so all are put. (Chunks alike were put once per write:
      // the rest reused it, and a first write hashed on the calling thread needed only a few buffers.)
      for (let off = 0; off < data.length; off += chunkSize) {
        data[off] = step
        data[off + 1] = off / chunkSize
      }
      return data
    }
    try {
      await countingShared(chunkSize, async (made) => {
        await cp.write(fresh(1), { step: 1 })
        const afterFirst = made()
        await cp.write(fresh(2), { step: 2 })
        await cp.write(fresh(3), { step: 3 })
        // On d76b9be each later write made 5 new buffers (84 - 64 MiB) and dropped as many: ~20 MiB
        // per write here, ~70 MiB per write of a large state with the S3/GCS defaults, resident
        // until a full collection (a loop of 256 MiB writes reached 2.9 GB RSS).
        expect(made() - afterFirst).toBe(0)
      })
      expect(sha((await cp.read())!)).toBe(sha(data))
    } finally {
      await cp.close()
    }
  })

  it('a write() that fails because its buffer was detached returns only once none of its chunk puts is still running', async () => {
    const data = new Uint8Array(3 * 64 * KiB).map((_, i) => i >> 16) // three different chunks
    const { storage, state } = slowChunkPuts(await backend.open(), 200, () => {
      structuredClone(data.buffer, { transfer: [data.buffer] }) // the caller gives its buffer away mid-write
    })
    const cp = await Checkpointer.open(storage, { chunkSize: 64 * KiB, concurrency: 1, ...quiet })
    let inFlightAtRejection = -1
    const w = cp.write(data, { step: 1 }).catch((e: unknown) => {
      inFlightAtRejection = state.inFlight
      throw e
    })
    await expect(w).rejects.toThrow(/shrank/)
    // On d76b9be the write rejected (and its lock was released, and close() could resolve) while
    // a chunk put it had started was still going on.
    expect(inFlightAtRejection).toBe(0)
    expect(await cp.latest()).toBeUndefined()
    await cp.close()
  })

  it('a process where worker threads cannot start still opens, writes and reads small checkpoints (needs npm run build)', async () => {
    const { uri, env } = await backend.freshUri()
    const entry = path.resolve('dist/src/index.js')
    const script = `const { Checkpointer } = await import(${JSON.stringify(entry)})
const cp = await Checkpointer.open(${JSON.stringify(uri)}, { repro: false })
await cp.write(new Uint8Array(4096).fill(9), { step: 1 })
const back = await cp.read()
await cp.close()
console.log('read', back.length, back[4095])`
    // Node's permission model without --allow-worker: new Worker() throws ERR_ACCESS_DENIED. On
    // d76b9be open() started the hashing threads and failed, though nothing here needs them.
    // The flag is --permission from Node 22.13/23.5 on (Node 24 refuses the old one), --experimental-permission before.
    const permission = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission'
    const r = spawnSync(process.execPath, [permission, '--allow-fs-read=*', '--allow-fs-write=*', '--input-type=module', '-e', script], {
      env: { ...process.env, ...env },
      timeout: 60_000,
      encoding: 'utf8',
    })
    expect(r.stderr).not.toMatch(/ERR_ACCESS_DENIED/)
    expect(r.stdout.trim()).toBe('read 4096 9')
    expect(r.status).toBe(0)
  })

  it('a write the caller awaits does not wait for hashing threads: where none can start, 24 MiB are hashed in place (needs npm run build)', async () => {
    const { uri, env } = await backend.freshUri()
    const entry = path.resolve('dist/src/index.js')
    // Large enough to be cut into shared chunks that would otherwise go to the threads.
    const script = `const { Checkpointer } = await import(${JSON.stringify(entry)})
const cp = await Checkpointer.open(${JSON.stringify(uri)}, { repro: false })
const data = new Uint8Array(24 << 20)
for (let i = 0; i < data.length; i += 4096) data[i] = (i >> 12) & 255
await cp.write(data, { step: 1 })
const back = await cp.read()
await cp.close()
console.log('read', back.length, Buffer.compare(Buffer.from(back), Buffer.from(data)))`
    const permission = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission'
    const r = spawnSync(process.execPath, [permission, '--allow-fs-read=*', '--allow-fs-write=*', '--input-type=module', '-e', script], {
      env: { ...process.env, ...env },
      timeout: 60_000,
      encoding: 'utf8',
    })
    // Before hashing in place until a thread is ready, this write failed: ERR_ACCESS_DENIED from new Worker().
    expect(r.stderr).not.toMatch(/ERR_ACCESS_DENIED|Error/)
    expect(r.stdout.trim()).toBe(`read ${24 << 20} 0`)
    expect(r.status).toBe(0)
  })
})
