import pLimit from 'p-limit'
import { SHA256_ID, chunkKey, type ChunkRef, type DType, type FileEntry } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { hashChunk, sharedBytes } from './hash.js'
import { endsPack, packTarget } from './pack.js'

/** One file of a checkpoint about to be written: in memory, or read from disk chunk by chunk. */
export interface PendingEntry {
  path: string
  size: number
  mode?: number
  dtype?: DType
  shape?: number[]
  /** In-memory bytes, or a reader that fills `buf` from `offset` and returns the bytes read. */
  source: Uint8Array | ((buf: Uint8Array, offset: number) => Promise<number>)
  /**
   * Reads the whole file into `buf` (exactly its size) synchronously. For small files on disk: a
   * promise round trip per system call costs more than the read of a few KiB itself.
   */
  readAll?: (buf: Uint8Array) => void
}

export interface UploadStats {
  /** Bytes hashed. */
  total: number
  /** Bytes sent: chunks (and packs) not already stored. */
  uploaded: number
  newChunks: number
  reusedChunks: number
}

export interface UploadOptions {
  chunkSize: number
  concurrency: number
  /** Chunks known to be stored intact (see ChunkLedger): only these are not uploaded. */
  known: { has(hash: string, size: number): boolean }
  /**
   * Entries of 1 to `packUpTo` bytes are laid back to back into shared chunks (packs; see pack.ts)
   * instead of a chunk each. At most `chunkSize`. Default 0: none.
   */
  packUpTo?: number
  /**
   * A caller awaits this upload: chunks are hashed on its thread until a hashing thread has started,
   * instead of waiting for one (see hashChunk). Default false (background commits).
   */
  hashInPlaceUntilReady?: boolean
  onProgress?: (loaded: number, uploaded: number) => void
  signal?: AbortSignal
}

/**
 * Chunk buffers kept for the next commit: a fresh one costs a page fault per 4 KiB on first touch,
 * and shared memory that is dropped is not counted by the garbage collector as pressure, so
 * buffers dropped after each commit pile up as resident memory (~70 MiB more per write of a large
 * state with 8 MiB chunks and 16 transfers). So every buffer comes back, up to SPARE_BYTES or the
 * most that commits ever held at once, whichever is more: no more than this process has needed.
 */
const SPARE_BYTES = 64 * 1024 * 1024
const spares: Uint8Array[] = []
/** Bytes of chunk buffers commits hold now, and the most they held at once. */
let lent = 0
let peak = 0

function takeSpare(size: number): Uint8Array {
  lent += size
  peak = Math.max(peak, lent)
  const i = spares.findIndex((b) => b.byteLength === size)
  return i >= 0 ? spares.splice(i, 1)[0]! : sharedBytes(size)
}

/** Takes back `bufs`, the free ones of the `taken` bytes a commit had (the rest are lost to a failure). */
function keepSpares(bufs: Uint8Array[], taken: number): void {
  lent -= taken
  let held = spares.reduce((n, b) => n + b.byteLength, 0)
  for (const b of bufs) {
    if (held + b.byteLength > Math.max(SPARE_BYTES, peak)) break
    spares.push(b)
    held += b.byteLength
  }
}

/** Files read synchronously between two turns of the event loop. */
const READS_PER_TURN = 256

/**
 * Cuts every entry into fixed-size chunks (small ones into shared packs), hashes them, and stores
 * the chunks not already known, at most `concurrency` in flight. Resolves once every chunk is
 * durable: only then may the manifest that references them be written.
 */
export async function uploadChunks(storage: Storage, entries: PendingEntry[], o: UploadOptions): Promise<{ files: FileEntry[]; packs: ChunkRef[]; stats: UploadStats }> {
  const limit = pLimit(o.concurrency)
  const stats: UploadStats = { total: 0, uploaded: 0, newChunks: 0, reusedChunks: 0 }
  const scheduled = new Set<string>()
  const tasks: Promise<unknown>[] = []
  // Buffers for chunks and packs read from disk, in shared memory so worker threads hash them;
  // recycled once their chunk is stored, so memory stays at (concurrency + 1) chunks whatever
  // the number and sizes of the files.
  const free: Uint8Array[] = []
  let allocated = 0
  let wake: (() => void) | undefined
  const giveBack = (buf: Uint8Array): void => {
    free.push(buf)
    wake?.()
  }
  let failed: unknown
  const takeBuffer = async (): Promise<Uint8Array | undefined> => {
    while (free.length === 0 && allocated > o.concurrency && !failed) await new Promise<void>((r) => (wake = r))
    if (failed) return undefined
    return free.pop() ?? (allocated++, takeSpare(o.chunkSize))
  }

  /** Hashes `bytes` and stores them unless known; `done` learns the reference once hashed. */
  const store = (bytes: Uint8Array, release: (() => void) | undefined, done: (ref: ChunkRef) => void): void => {
    const len = bytes.byteLength
    const task = limit(async () => {
      try {
        const { hash, crc32 } = await hashChunk(bytes, storage.capabilities.takesCrc32 === true, o.hashInPlaceUntilReady === true)
        done({ hash, size: len })
        stats.total += len
        if (o.known.has(hash, len) || scheduled.has(hash)) {
          stats.reusedChunks++
        } else {
          scheduled.add(hash)
          stats.newChunks++
          // A SHA-256 id is also the body's checksum, and a CRC32 from the hashing thread may be one: a driver may send either rather than hash the body again.
          await storage.put(chunkKey(hash), bytes, {
            batch: true,
            ...(o.signal ? { signal: o.signal } : {}),
            ...(SHA256_ID.test(hash) ? { sha256: hash } : crc32 !== undefined ? { crc32 } : {}),
          })
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
  }

  const packUpTo = Math.min(o.packUpTo ?? 0, o.chunkSize)
  const target = packTarget(o.chunkSize)
  const packs: ChunkRef[] = []
  let pack: { buf: Uint8Array; len: number; index: number } | undefined
  const closePack = (): void => {
    if (!pack) return
    const p = pack
    pack = undefined
    store(
      p.buf.subarray(0, p.len),
      () => giveBack(p.buf),
      (ref) => (packs[p.index] = ref),
    )
  }
  let reads = 0

  const files: FileEntry[] = []
  try {
    for (const e of entries) {
      if (failed) break
      o.signal?.throwIfAborted()
      const fe: FileEntry = { path: e.path, size: e.size, chunks: [] }
      if (e.mode !== undefined) fe.mode = e.mode
      if (e.dtype !== undefined) fe.dtype = e.dtype
      if (e.shape !== undefined) fe.shape = e.shape
      files.push(fe)
      if (e.size >= 1 && e.size <= packUpTo) {
        if (pack && pack.len + e.size > o.chunkSize) closePack()
        if (!pack) {
          const buf = await takeBuffer()
          if (!buf) break
          pack = { buf, len: 0, index: packs.length }
          packs.length++
        }
        await readWhole(e, pack.buf.subarray(pack.len, pack.len + e.size))
        fe.packed = { pack: pack.index, offset: pack.len }
        pack.len += e.size
        if (endsPack(e.path, e.size, target)) closePack()
        // Reads of small files are synchronous: let uploads, hashing and timers run now and then.
        if (++reads % READS_PER_TURN === 0) await new Promise((r) => setImmediate(r))
        continue
      }
      const chunks = fe.chunks
      for (let off = 0, ci = 0; off < e.size; off += o.chunkSize, ci++) {
        if (failed) break
        o.signal?.throwIfAborted()
        const len = Math.min(o.chunkSize, e.size - off)
        let bytes: Uint8Array
        let release: (() => void) | undefined
        if (e.source instanceof Uint8Array) {
          bytes = e.source.subarray(off, off + len)
        } else {
          const buf = await takeBuffer()
          if (!buf) break
          bytes = buf.subarray(0, len)
          await readRange(e, e.source, bytes, off)
          release = () => giveBack(buf)
        }
        const index = ci
        store(bytes, release, (ref) => (chunks[index] = ref))
        // Hashing of unshared bytes happens on this thread: let other work run between chunks.
        if (!(bytes.buffer instanceof SharedArrayBuffer)) await new Promise((r) => setImmediate(r))
      }
    }
    if (!failed) closePack()
  } finally {
    // Also when reading failed (a file or the caller's buffer shrank): the chunks already handed
    // over are still being stored, and no failed commit leaves puts running behind its back.
    await Promise.allSettled(tasks)
    // Every task has settled: no hashing thread or transfer holds these any more.
    keepSpares(free.splice(0), allocated * o.chunkSize)
  }
  if (failed) throw failed
  // One durability barrier for all chunks: only after it may the manifest be written.
  await storage.sync()
  return { files, packs, stats }
}

/** All of an entry's bytes into `dst` (exactly its size). */
async function readWhole(e: PendingEntry, dst: Uint8Array): Promise<void> {
  if (e.source instanceof Uint8Array) return void dst.set(e.source.subarray(0, e.size))
  if (e.readAll) return e.readAll(dst)
  await readRange(e, e.source, dst, 0)
}

/** Fills `dst` with the entry's bytes from `offset` on, reading until full; a source that ends first shrank. */
async function readRange(e: PendingEntry, read: (buf: Uint8Array, offset: number) => Promise<number>, dst: Uint8Array, offset: number): Promise<void> {
  for (let got = 0; got < dst.byteLength; ) {
    const n = await read(dst.subarray(got), offset + got)
    if (n === 0) throw new Error(`${e.path} shrank while being saved (expected ${e.size} bytes)`)
    got += n
  }
}
