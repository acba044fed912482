// Builds a checkpoint history fast: one tiny shared chunk, then manifests written directly (what a
// writer would have committed), so benchmarks and tests can stand at 5,000 checkpoints in seconds.
import { createHash } from 'node:crypto'
import { FORMAT_VERSION, chunkKey, encodeManifest, manifestKey, type Manifest } from '../src/format/manifest.js'
import type { Storage } from '../src/storage/types.js'

export interface Planted {
  key: string
  data: Uint8Array
}

/** Stores `data` as one chunk and returns a manifest body for it (bytes kind). */
export async function plantChunk(storage: Storage, data: Uint8Array): Promise<Manifest['files']> {
  const hash = createHash('sha256').update(data).digest('hex')
  await storage.put(chunkKey(hash), data)
  return [{ path: 'data', size: data.byteLength, chunks: data.byteLength ? [{ hash, size: data.byteLength }] : [] }]
}

/** Writes one manifest as a writer of `epoch` would have committed it. */
export async function plantManifest(storage: Storage, files: Manifest['files'], n: { epoch: number; seq: number; step: number; writer: string }): Promise<string> {
  const m: Manifest = {
    format: FORMAT_VERSION,
    kind: 'bytes',
    ...n,
    createdAt: new Date().toISOString(),
    chunkSize: 4 * 1024 * 1024,
    totalSize: files.reduce((s, f) => s + f.size, 0),
    metadata: {},
    repro: {},
    files,
  }
  const key = manifestKey(m)
  await storage.put(key, encodeManifest(m))
  return key
}

/**
 * `count` checkpoints of one writer at `epoch` (seq 1..count, step = seq), `parallel` puts at a
 * time, all sharing one chunk. Returns the newest key.
 */
export async function plantHistory(storage: Storage, count: number, o: { epoch?: number; writer?: string; parallel?: number; data?: Uint8Array } = {}): Promise<string> {
  const files = await plantChunk(storage, o.data ?? Buffer.from('tiny shared chunk'))
  const epoch = o.epoch ?? 1
  const writer = o.writer ?? 'planted'
  let next = 1
  let newest = ''
  const worker = async (): Promise<void> => {
    while (next <= count) {
      const seq = next++
      const key = await plantManifest(storage, files, { epoch, seq, step: seq, writer })
      if (seq === count) newest = key
    }
  }
  await Promise.all(Array.from({ length: o.parallel ?? 16 }, worker))
  // The writer that made them would have claimed its epoch first.
  await storage.put(`writers/${String(epoch).padStart(8, '0')}-${writer}.json`, Buffer.from(JSON.stringify({ writer, epoch })))
  return newest
}
