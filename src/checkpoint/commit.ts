import { createHash } from 'node:crypto'
import pLimit from 'p-limit'
import { chunkKey, type ChunkRef, type DType, type FileEntry } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'

/** One file of a checkpoint about to be written: in memory, or read from disk chunk by chunk. */
export interface PendingEntry {
  path: string
  size: number
  mode?: number
  dtype?: DType
  shape?: number[]
  /** In-memory bytes, or a reader that fills `buf` from `offset` and returns the bytes read. */
  source: Uint8Array | ((buf: Uint8Array, offset: number) => Promise<number>)
}

export interface UploadStats {
  /** Bytes hashed. */
  total: number
  /** Bytes sent: chunks not already stored. */
  uploaded: number
  newChunks: number
  reusedChunks: number
}

export interface UploadOptions {
  chunkSize: number
  concurrency: number
  /** Hashes of chunks known to be stored (those of the previous manifest). */
  known: ReadonlySet<string>
  onProgress?: (loaded: number, uploaded: number) => void
  signal?: AbortSignal
}

/**
 * Cuts every entry into fixed-size chunks, hashes them, and stores the chunks not already known,
 * at most `concurrency` in flight. Resolves once every chunk is durable: only then may the
 * manifest that references them be written.
 */
export async function uploadChunks(storage: Storage, entries: PendingEntry[], o: UploadOptions): Promise<{ files: FileEntry[]; stats: UploadStats }> {
  const limit = pLimit(o.concurrency)
  const stats: UploadStats = { total: 0, uploaded: 0, newChunks: 0, reusedChunks: 0 }
  const scheduled = new Set<string>()
  const puts: Promise<unknown>[] = []
  // Buffers for chunks read from disk; recycled once their put is done, so memory stays at
  // (concurrency + 1) chunks whatever the file sizes.
  const free: Uint8Array[] = []
  const files: FileEntry[] = []
  let failed: unknown

  const store = (hash: string, bytes: Uint8Array, release?: () => void): void => {
    const p = limit(async () => {
      try {
        await storage.put(chunkKey(hash), bytes, o.signal ? { signal: o.signal } : {})
        stats.uploaded += bytes.byteLength
        o.onProgress?.(stats.total, stats.uploaded)
      } finally {
        release?.()
      }
    })
    p.catch((e: unknown) => {
      failed ??= e
    })
    puts.push(p)
  }

  for (const e of entries) {
    const chunks: ChunkRef[] = []
    for (let off = 0; off < e.size; off += o.chunkSize) {
      if (failed) throw failed
      o.signal?.throwIfAborted()
      // Hashing is CPU work on the caller's thread: yield between chunks so a training loop
      // sharing the event loop is delayed by one chunk's hash at most.
      await new Promise((r) => setImmediate(r))
      const len = Math.min(o.chunkSize, e.size - off)
      let bytes: Uint8Array
      let release: (() => void) | undefined
      if (e.source instanceof Uint8Array) {
        bytes = e.source.subarray(off, off + len)
      } else {
        // Wait for a buffer to come back rather than allocate without bound.
        while (free.length === 0 && limit.activeCount + limit.pendingCount >= o.concurrency) await Promise.race(puts)
        const buf = free.pop() ?? new Uint8Array(o.chunkSize)
        let got = 0
        while (got < len) {
          const n = await e.source(buf.subarray(got, len), off + got)
          if (n === 0) throw new Error(`${e.path} shrank while being saved (expected ${e.size} bytes)`)
          got += n
        }
        bytes = buf.subarray(0, len)
        release = () => free.push(buf)
      }
      const hash = createHash('sha256').update(bytes).digest('hex')
      chunks.push({ hash, size: len })
      stats.total += len
      if (o.known.has(hash) || scheduled.has(hash)) {
        stats.reusedChunks++
        release?.()
        o.onProgress?.(stats.total, stats.uploaded)
      } else {
        scheduled.add(hash)
        stats.newChunks++
        store(hash, bytes, release)
      }
    }
    const fe: FileEntry = { path: e.path, size: e.size, chunks }
    if (e.mode !== undefined) fe.mode = e.mode
    if (e.dtype !== undefined) fe.dtype = e.dtype
    if (e.shape !== undefined) fe.shape = e.shape
    files.push(fe)
  }
  await Promise.allSettled(puts)
  if (failed) throw failed
  return { files, stats }
}
