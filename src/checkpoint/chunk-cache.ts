import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import { homedir } from 'node:os'
import path from 'node:path'
import { TaskpointError } from '../errors.js'
import { CHUNK_ID, chunkDigest } from '../format/manifest.js'
import { matchesChunkId } from './hash.js'

export interface ChunkCacheOptions {
  /**
   * Where cached chunks live; processes on one host may share it. Default: `$TASKPOINT_CACHE_DIR`,
   * else `$XDG_CACHE_HOME/taskpoint/chunks`, else `~/.cache/taskpoint/chunks`.
   */
  dir?: string
  /** Bytes kept; the least recently used chunks go beyond it. Default 10 GiB. */
  maxBytes?: number
}

export interface ChunkCacheStats {
  hits: number
  misses: number
  /** Bytes served from the cache instead of the store. */
  hitBytes: number
  /** Cached chunks found damaged (and removed) on use. */
  rejected: number
}

const GiB = 1024 * 1024 * 1024
/** Copies of chunks waiting to be written to the cache, at most (then reads wait for the disk). */
const MAX_PENDING_BYTES = 64 * 1024 * 1024
const TEMP_RE = /^\.tmp-\d+-[0-9a-f]{8}$/
const HASH_RE = CHUNK_ID

export function defaultCacheDir(): string {
  const env = process.env
  if (env.TASKPOINT_CACHE_DIR) return path.resolve(env.TASKPOINT_CACHE_DIR)
  return path.join(env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(homedir(), '.cache'), 'taskpoint', 'chunks')
}

/**
 * A local, content-addressed copy of chunks read from any store, so reading the same checkpoint
 * again (a restart on the same machine, several workers on one host) downloads nothing already here.
 *
 * Nothing in it is trusted: a cached chunk is re-hashed on every use, and one that fails (torn by a
 * crash, altered, truncated) is removed and fetched from the store. Files appear by temp + rename,
 * so a reader never sees half a file, and processes writing the same chunk write the same bytes.
 * No fsync: losing a cached file after a power cut costs a download, never correctness. A hit says
 * nothing about the store's copy, so it is not reported to the writer's ledger: the next commit
 * uploads such chunks again rather than trust a copy nobody checked.
 */
export class ChunkCache {
  readonly dir: string
  readonly maxBytes: number
  readonly stats: ChunkCacheStats = { hits: 0, misses: 0, hitBytes: 0, rejected: 0 }
  /** Bytes written since the last trim; a trim walks the directory, so it runs only now and then. */
  private added = 0
  private trimmed = false
  private trimming: Promise<void> | undefined
  private readonly pending = new Set<Promise<void>>()
  private pendingBytes = 0

  constructor(o: ChunkCacheOptions = {}) {
    this.dir = path.resolve(o.dir ?? defaultCacheDir())
    this.maxBytes = o.maxBytes ?? 10 * GiB
    if (!Number.isSafeInteger(this.maxBytes) || this.maxBytes < 0) {
      throw new TaskpointError('InvalidOption', `chunkCache.maxBytes must be a whole number of bytes >= 0, got ${String(o.maxBytes)}`)
    }
  }

  private pathOf(hash: string): string {
    if (!HASH_RE.test(hash)) throw new TaskpointError('InvalidOption', `not a chunk hash: ${JSON.stringify(hash)}`)
    return path.join(this.dir, chunkDigest(hash).slice(0, 2), hash)
  }

  /** The chunk's bytes (in `into` when it is large enough) if cached and intact, else undefined. */
  async read(hash: string, size: number, into?: Uint8Array): Promise<Uint8Array | undefined> {
    const file = this.pathOf(hash)
    let fh: fs.FileHandle
    try {
      fh = await fs.open(file, 'r')
    } catch {
      this.stats.misses++
      return undefined
    }
    let bytes: Uint8Array | undefined
    // A chunk this process cannot check (BLAKE3 without the native module) is neither served nor
    // removed: other processes sharing the directory can, and the read fails with that error anyway.
    let unchecked: unknown
    try {
      const st = await fh.stat()
      if (st.isFile() && st.size === size) {
        const buf = into && into.byteLength >= size ? into.subarray(0, size) : new Uint8Array(size)
        let got = 0
        while (got < size) {
          const { bytesRead } = await fh.read(buf, got, size - got, got)
          if (bytesRead === 0) break
          got += bytesRead
        }
        if (got === size && (await matchesChunkId(buf, hash))) bytes = buf
      }
    } catch (e) {
      bytes = undefined
      if (e instanceof TaskpointError && e.code === 'UnsupportedFormat') unchecked = e
    } finally {
      await fh.close().catch(() => {})
    }
    if (unchecked) throw unchecked
    if (!bytes) {
      this.stats.rejected++
      this.stats.misses++
      await fs.rm(file, { force: true }).catch(() => {})
      return undefined
    }
    this.stats.hits++
    this.stats.hitBytes += size
    // Recently used chunks are the last to be evicted.
    const now = new Date()
    await fs.utimes(file, now, now).catch(() => {})
    return bytes
  }

  /**
   * Keeps a verified chunk without holding up the read that fetched it: the bytes are copied (the
   * caller's buffer is reused for the next chunk) and written while downloads go on. Waits only
   * when more than `MAX_PENDING_BYTES` are queued, so memory stays bounded. `settle()` waits for all.
   */
  async keep(hash: string, bytes: Uint8Array): Promise<void> {
    while (this.pendingBytes > MAX_PENDING_BYTES && this.pending.size > 0) await Promise.race(this.pending)
    const copy = Uint8Array.from(bytes)
    this.pendingBytes += copy.byteLength
    const p: Promise<void> = this.write(hash, copy).finally(() => {
      this.pending.delete(p)
      this.pendingBytes -= copy.byteLength
    })
    this.pending.add(p)
  }

  /** Waits until every chunk passed to `keep` is written (or given up). */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending)
  }

  /** Keeps a verified chunk. Best effort: a full or read-only disk only means no caching. */
  async write(hash: string, bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > this.maxBytes) return
    const file = this.pathOf(hash)
    const tmp = path.join(path.dirname(file), `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`)
    try {
      await fs.mkdir(path.dirname(file), { recursive: true })
      await fs.writeFile(tmp, bytes, { flag: 'wx' })
      await fs.rename(tmp, file)
    } catch {
      await fs.rm(tmp, { force: true }).catch(() => {})
      return
    }
    this.added += bytes.byteLength
    if (!this.trimmed || this.added > this.maxBytes / 8) await this.trim()
  }

  /**
   * Evicts least recently used chunks until the cache holds at most `maxBytes`, and removes temp
   * files of writers gone for an hour. Another process may evict a chunk this one is about to read:
   * that read is a miss, nothing worse (an open file stays readable after unlink).
   */
  async trim(): Promise<void> {
    this.trimming ??= this.trimNow().finally(() => (this.trimming = undefined))
    await this.trimming
  }

  private async trimNow(): Promise<void> {
    this.trimmed = true
    this.added = 0
    const files: { file: string; size: number; used: number }[] = []
    let subdirs: string[]
    try {
      subdirs = await fs.readdir(this.dir)
    } catch {
      return
    }
    const hourAgo = Date.now() - 3600_000
    for (const sub of subdirs) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue
      const names = await fs.readdir(path.join(this.dir, sub)).catch(() => [] as string[])
      for (const name of names) {
        const file = path.join(this.dir, sub, name)
        const st = await fs.stat(file).catch(() => undefined)
        if (!st?.isFile()) continue
        if (TEMP_RE.test(name)) {
          if (st.mtimeMs < hourAgo) await fs.rm(file, { force: true }).catch(() => {})
        } else if (HASH_RE.test(name)) files.push({ file, size: st.size, used: st.mtimeMs })
      }
    }
    let total = files.reduce((s, f) => s + f.size, 0)
    files.sort((a, b) => a.used - b.used)
    for (const f of files) {
      if (total <= this.maxBytes) break
      await fs.rm(f.file, { force: true }).catch(() => {})
      total -= f.size
    }
  }
}
