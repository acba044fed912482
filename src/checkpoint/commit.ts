import pLimit from 'p-limit'
import { chunkKey, type ChunkRef, type DType, type FileEntry } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { chunkId, sharedBytes } from './hash.js'

const SHA256_ID = /^[0-9a-f]{64}$/

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
  /** Chunks known to be stored intact (see ChunkLedger): only these are not uploaded. */
  known: { has(hash: string, size: number): boolean }
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
  const tasks: Promise<unknown>[] = []
  // Buffers for chunks read from disk, in shared memory so worker threads hash them; recycled once
  // their chunk is stored, so memory stays at (concurrency + 1) chunks whatever the file sizes.
  const free: Uint8Array[] = []
  let allocated = 0
  let wake: (() => void) | undefined
  const giveBack = (buf: Uint8Array): void => {
    free.push(buf)
    wake?.()
  }
  let failed: unknown
  const files: FileEntry[] = []

  for (const e of entries) {
    const chunks: ChunkRef[] = []
    for (let off = 0, ci = 0; off < e.size; off += o.chunkSize, ci++) {
      if (failed) break
      o.signal?.throwIfAborted()
      const len = Math.min(o.chunkSize, e.size - off)
      let bytes: Uint8Array
      let release: (() => void) | undefined
      if (e.source instanceof Uint8Array) {
        bytes = e.source.subarray(off, off + len)
      } else {
        while (free.length === 0 && allocated > o.concurrency && !failed) await new Promise<void>((r) => (wake = r))
        if (failed) break
        const buf = free.pop() ?? (allocated++, sharedBytes(o.chunkSize))
        let got = 0
        while (got < len) {
          const n = await e.source(buf.subarray(got, len), off + got)
          if (n === 0) throw new Error(`${e.path} shrank while being saved (expected ${e.size} bytes)`)
          got += n
        }
        bytes = buf.subarray(0, len)
        release = () => giveBack(buf)
      }
      const index = ci
      const task = limit(async () => {
        try {
          const hash = await chunkId(bytes)
          chunks[index] = { hash, size: len }
          stats.total += len
          if (o.known.has(hash, len) || scheduled.has(hash)) {
            stats.reusedChunks++
          } else {
            scheduled.add(hash)
            stats.newChunks++
            // A SHA-256 id is also the body's checksum: a driver may send it rather than hash the body again.
            await storage.put(chunkKey(hash), bytes, { batch: true, ...(o.signal ? { signal: o.signal } : {}), ...(SHA256_ID.test(hash) ? { sha256: hash } : {}) })
            stats.uploaded += len
          }
          o.onProgress?.(stats.total, stats.uploaded)
        } finally {
          release?.()
        }
      })
      task.catch((err: unknown) => {
        failed ??= err
        wake?.()
      })
      tasks.push(task)
      // Hashing of unshared bytes happens on this thread: let other work run between chunks.
      if (!(bytes.buffer instanceof SharedArrayBuffer)) await new Promise((r) => setImmediate(r))
    }
    const fe: FileEntry = { path: e.path, size: e.size, chunks }
    if (e.mode !== undefined) fe.mode = e.mode
    if (e.dtype !== undefined) fe.dtype = e.dtype
    if (e.shape !== undefined) fe.shape = e.shape
    files.push(fe)
  }
  await Promise.allSettled(tasks)
  if (failed) throw failed
  // One durability barrier for all chunks: only after it may the manifest be written.
  await storage.sync()
  return { files, stats }
}
