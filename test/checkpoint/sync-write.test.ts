import { describe, expect, it } from 'vitest'
import { verifyCheckpoints } from '../../src/admin.js'
import { Checkpointer } from '../../src/index.js'
import { allBackends, type Backend } from '../helpers/backends.js'

// write() copies the caller's bytes chunk by chunk as the commit cuts them, not into a snapshot up
// front. The caller must not change them until it resolves; one who does anyway gets a readable
// checkpoint whose every chunk is either all old or all new bytes, never a chunk under a wrong id.

const quiet = { onWarning: () => {}, repro: false as const }
const CHUNK = 64 * 1024

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 10)) & 255)

describe.each(allBackends().map((b) => [b.name, b] as const))('sync write on %s', (_n, backend: Backend) => {
  it('bytes changed by the caller during write(): a readable checkpoint of whole old or new chunks, verify clean', async () => {
    const s = await backend.open()
    const data = pattern(8 * CHUNK, 1)
    const old = Uint8Array.from(data)
    let changed = false
    const cp = await Checkpointer.open(s, {
      ...quiet,
      chunkSize: CHUNK,
      concurrency: 1,
      onProgress: (p) => {
        // After the first chunk is stored, the caller overwrites everything (which it must not do).
        if (p.phase === 'upload' && p.uploaded >= CHUNK && !changed) {
          changed = true
          data.fill(0xee)
        }
      },
    })
    const info = await cp.write(data, { step: 1 })
    expect(changed).toBe(true)
    const back = (await (await Checkpointer.open(s, quiet)).read(info.id))!
    expect(back.byteLength).toBe(data.byteLength)
    let newChunks = 0
    for (let off = 0; off < back.byteLength; off += CHUNK) {
      const got = Buffer.from(back.subarray(off, off + CHUNK))
      const isOld = got.equals(Buffer.from(old.subarray(off, off + CHUNK)))
      const isNew = got.every((b) => b === 0xee)
      expect(isOld || isNew, `chunk at ${off}`).toBe(true)
      if (isNew) newChunks++
    }
    expect(Buffer.from(back.subarray(0, CHUNK)).equals(Buffer.from(old.subarray(0, CHUNK)))).toBe(true)
    expect(newChunks).toBeGreaterThan(0)
    expect((await verifyCheckpoints(s)).map((r) => r.problems)).toEqual([[]])
    await cp.close()
  })

  it('a buffer detached during write() fails the write; nothing is committed and the previous checkpoint stays the latest', async () => {
    const s = await backend.open()
    const first = await (await Checkpointer.open(s, quiet)).write(pattern(3 * CHUNK, 2), { step: 1 })
    const data = pattern(8 * CHUNK, 3)
    let detached = false
    const cp = await Checkpointer.open(s, {
      ...quiet,
      chunkSize: CHUNK,
      concurrency: 1,
      onProgress: (p) => {
        if (p.phase === 'upload' && p.loaded >= CHUNK && !detached) {
          detached = true
          structuredClone(data.buffer, { transfer: [data.buffer as ArrayBuffer] })
        }
      },
    })
    await expect(cp.write(data, { step: 2 })).rejects.toThrow(/shrank while being saved/)
    expect(detached).toBe(true)
    const r = await Checkpointer.open(s, quiet)
    expect((await r.latest())?.id).toBe(first.id)
    expect(Buffer.from((await r.read())!).equals(Buffer.from(pattern(3 * CHUNK, 2)))).toBe(true)
  })

  it('state of many separate arrays, empty ones among them, crossing chunk boundaries, reads back exactly', async () => {
    const s = await backend.open()
    const cp = await Checkpointer.open(s, { ...quiet, chunkSize: 1024 })
    const arrays: Record<string, Uint8Array | Float32Array> = {
      empty0: new Uint8Array(0),
      a: pattern(5, 4),
      empty1: new Uint8Array(0),
      big: pattern(3000, 5),
      f: Float32Array.from({ length: 300 }, (_, i) => i / 7),
      empty2: new Float32Array(0),
    }
    for (let i = 0; i < 50; i++) arrays[`small${i}`] = pattern(i * 13, i)
    await cp.write({ arrays })
    const st = (await (await Checkpointer.open(s, quiet)).readState())!
    for (const [name, a] of Object.entries(arrays))
      expect(
        Buffer.from(st.arrays[name]!.data.buffer, st.arrays[name]!.data.byteOffset, st.arrays[name]!.data.byteLength).equals(Buffer.from(a.buffer, a.byteOffset, a.byteLength)),
        name,
      ).toBe(true)
    await cp.close()
  })
})
