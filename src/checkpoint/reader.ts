import pLimit from 'p-limit'
import { StorageError, isNotFound } from '../errors.js'
import {
  BLAKE3_ID_PREFIX,
  CorruptCheckpointError,
  MANIFEST_DIR,
  chunkKey,
  compareNames,
  decodeManifest,
  isBlake3Id,
  parseManifestKey,
  type ChunkRef,
  type FileEntry,
  type Manifest,
  type ManifestName,
} from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import type { ChunkCache } from './chunk-cache.js'
import { matchesChunkId } from './hash.js'
import type { CheckpointInfo } from './types.js'

/** Committed manifests by name, oldest first. Objects under manifests/ with foreign names are ignored. */
export async function listManifestNames(storage: Storage): Promise<ManifestName[]> {
  const names: ManifestName[] = []
  for await (const o of storage.list(MANIFEST_DIR)) {
    const n = parseManifestKey(o.key)
    if (n) names.push(n)
  }
  return names.sort(compareNames)
}

/** Manifests are immutable once committed, so a parsed one can be cached by key forever. */
export class ManifestCache {
  private readonly byKey = new Map<string, Promise<Manifest>>()
  constructor(private readonly storage: Storage) {}

  get(key: string): Promise<Manifest> {
    let p = this.byKey.get(key)
    if (!p) {
      p = this.storage.get(key).then(
        (bytes) => decodeManifest(key, bytes),
        (e: unknown) => {
          if (isNotFound(e)) throw new CorruptCheckpointError(key, 'manifest vanished (pruned meanwhile?)', true)
          throw e
        },
      )
      // Only successes are cached: a transient failure must be retried by the next reader.
      p.catch(() => this.byKey.delete(key))
      this.byKey.set(key, p)
    }
    return p
  }

  /**
   * A manifest this process just stored, decoded from the stored bytes: later gets take it instead
   * of reading it back (as they would after a first read), so retention right after a commit costs no read.
   */
  remember(key: string, stored: Manifest): void {
    if (!this.byKey.has(key)) this.byKey.set(key, Promise.resolve(stored))
  }

  forget(key: string): void {
    this.byKey.delete(key)
  }
}

export function infoOf(key: string, m: Manifest): CheckpointInfo {
  const info: CheckpointInfo = {
    id: key,
    step: m.step,
    seq: m.seq,
    epoch: m.epoch,
    writer: m.writer,
    kind: m.kind,
    createdAt: new Date(m.createdAt),
    size: m.totalSize,
    files: m.files.length,
    metadata: m.metadata ?? {},
  }
  if (m.attempt !== undefined) info.attempt = m.attempt
  return info
}

/** Where a read reports what it learnt about chunks (see ChunkLedger). */
export interface ChunkWitness {
  verified(hash: string, size: number, anchor: string): void
  damaged(hash: string): void
}

/**
 * Fetches one chunk and checks its size and hash: a chunk that does not hash to its name is never
 * returned, whatever the store says. A missing, short, long or altered chunk is damage to the
 * checkpoint that references it.
 */
export async function fetchChunk(
  storage: Storage,
  checkpoint: string,
  hash: string,
  size: number,
  into?: Uint8Array,
  witness?: ChunkWitness,
  cache?: ChunkCache,
): Promise<Uint8Array> {
  // A cached copy is verified by the cache itself; it vouches for nothing stored, so no witness.
  const cached = await cache?.read(hash, size, into)
  if (cached) return cached
  let why = ''
  // A mismatch may be a fault in transit that slipped past the transport's own checks: the chunk
  // is read again before it is called damaged (which makes a reader fall back to an older checkpoint).
  for (let attempt = 0; attempt < 3; attempt++) {
    let bytes: Uint8Array
    try {
      // One byte more than expected is asked for, so an oversized object shows as such without
      // ever being read whole into memory.
      bytes = await storage.get(chunkKey(hash), into && into.byteLength >= size ? { into, range: { offset: 0, length: size + 1 } } : { range: { offset: 0, length: size + 1 } })
    } catch (e) {
      if (isNotFound(e)) {
        why = 'is missing'
        break
      }
      if (!isSizeMismatch(e)) throw e
      why = `is larger than its ${size} bytes`
      continue
    }
    if (bytes.byteLength !== size) why = `has ${bytes.byteLength > size ? 'more than' : bytes.byteLength} bytes, expected ${size}`
    else if (!(await matchesChunkId(bytes, hash))) why = 'fails its hash check'
    else {
      witness?.verified(hash, size, checkpoint)
      await cache?.keep(hash, bytes)
      return bytes
    }
  }
  witness?.damaged(hash)
  throw new CorruptCheckpointError(checkpoint, `chunk ${hash.slice(0, isBlake3Id(hash) ? BLAKE3_ID_PREFIX.length + 12 : 12)}… ${why}`)
}

/** An object larger than the buffer it was read into: every driver says so with `SizeMismatchError`. */
function isSizeMismatch(e: unknown): boolean {
  return e instanceof StorageError && e.code === 'SizeMismatch'
}

/** Each chunk of a file with its offset in the file. */
function chunksWithOffsets(entry: FileEntry): { chunk: ChunkRef; at: number }[] {
  let at = 0
  return entry.chunks.map((chunk) => {
    const placed = { chunk, at }
    at += chunk.size
    return placed
  })
}

/**
 * Every file of a manifest in memory, verified. Each pack is fetched once and its files are views
 * of it; other files are read chunk by chunk (in parallel within a file).
 */
export async function readFiles(
  storage: Storage,
  checkpoint: string,
  m: Manifest,
  concurrency: number,
  onBytes?: (n: number) => void,
  witness?: ChunkWitness,
  cache?: ChunkCache,
): Promise<Map<string, Uint8Array>> {
  const packs = await pLimit(concurrency).map(m.packs ?? [], async (p) => {
    const bytes = await fetchChunk(storage, checkpoint, p.hash, p.size, new Uint8Array(p.size + 1), witness, cache)
    onBytes?.(p.size)
    return bytes
  })
  const files = new Map<string, Uint8Array>()
  for (const f of m.files) {
    if (f.packed) files.set(f.path, packs[f.packed.pack]!.subarray(f.packed.offset, f.packed.offset + f.size))
    else files.set(f.path, await readEntry(storage, checkpoint, f, concurrency, onBytes, witness, cache))
  }
  return files
}

/** Reads a file entry of a manifest into one buffer, chunks fetched in parallel and verified. */
export async function readEntry(
  storage: Storage,
  checkpoint: string,
  entry: FileEntry,
  concurrency: number,
  onBytes?: (n: number) => void,
  witness?: ChunkWitness,
  cache?: ChunkCache,
): Promise<Uint8Array> {
  // Ordinary memory, not shared: the caller keeps this buffer, and V8 does not count shared memory
  // toward collection, so a job that reads 1 GiB checkpoints again and again grew by 1 GiB per read
  // (and slowed to a crawl) until some unrelated collection ran. Chunks land in place; they are
  // verified on this thread (BLAKE3 at ~5 GB/s), between reads that run on the thread pool.
  // Not zero-filled (that cost as much as the reads at 16 MiB): the manifest's chunk sizes add up to
  // the entry's (checked on decode), each chunk fills its range or the read fails, and a failed
  // read never hands `out` back.
  const out = new Uint8Array(Buffer.allocUnsafeSlow(entry.size).buffer, 0, entry.size)
  await pLimit(concurrency).map(chunksWithOffsets(entry), async ({ chunk: c, at }) => {
    const bytes = await fetchChunk(storage, checkpoint, c.hash, c.size, out.subarray(at, at + c.size), witness, cache)
    if (bytes.byteOffset !== out.byteOffset + at || bytes.buffer !== out.buffer) out.set(bytes, at)
    onBytes?.(c.size)
  })
  return out
}
