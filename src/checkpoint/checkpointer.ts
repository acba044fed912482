import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import path from 'node:path'
import { TaskpointError } from '../errors.js'
import {
  CorruptCheckpointError,
  FORMAT_VERSION,
  STATE_FILE,
  WRITER_DIR,
  encodeManifest,
  manifestKey,
  validateEntryPath,
  type ArrayEntry,
  type CheckpointKind,
  type DType,
  type Manifest,
  type ManifestName,
} from '../format/manifest.js'
import { TEMP_MARK } from '../storage/keys.js'
import { openStorage, type OpenStorageOptions } from '../storage/resolve.js'
import type { Storage } from '../storage/types.js'
import { sharedBytes } from './hash.js'
import { uploadChunks, type PendingEntry, type UploadStats } from './commit.js'
import { collectGarbage, prune, readInfos } from './gc.js'
import { ManifestCache, eachChunk, fetchChunk, infoOf, listManifestNames, readEntry } from './reader.js'
import { reproInfo } from './repro.js'
import { keepAll, type RetentionPolicy } from './retention.js'
import type {
  ArrayInput,
  CheckpointInfo,
  CheckpointProgress,
  LoadedState,
  SkippedCheckpoint,
  StateArray,
  StateInput,
  WriteOptions,
} from './types.js'

const MiB = 1024 * 1024

export interface CheckpointerOptions {
  /** Which checkpoints survive a commit. Default: keep all. See `latest`, `everyNSteps`, `best`, `anyOf`. */
  keep?: RetentionPolicy
  /** Chunk size for content addressing and parallel upload. Default 4 MiB. */
  chunkSize?: number
  /** Chunk transfers in flight. Default 8 on local disk, 16 on S3/GCS. */
  concurrency?: number
  /** Options for the storage the URI opens (ignored when a `Storage` is passed). */
  storage?: OpenStorageOptions
  /** Identifies this writer in manifests and fencing markers. Default: random. */
  writerId?: string
  /** Task attempt number, recorded in each manifest. */
  attempt?: number
  /** Garbage collection after retention. `minAgeMs`: leave unreferenced chunks younger than this (default 15 min). */
  gc?: { minAgeMs?: number; enabled?: boolean }
  /** Extra reproducibility fields, or false to record none. Default: versions, platform, git commit, entry hash. */
  repro?: boolean | Record<string, unknown>
  onProgress?: (p: CheckpointProgress) => void
  /** Where skipped (corrupt) checkpoints and other non-fatal problems are reported. Default: console.warn. */
  onWarning?: (message: string) => void
}

/** Thrown when a newer attempt has taken over this checkpoint location; this writer must stop. */
export class FencedError extends TaskpointError {
  constructor(
    readonly writer: string,
    readonly by: string,
  ) {
    super(
      'Fenced',
      `writer ${writer} was superseded by a newer attempt (${by}) writing the same checkpoint location; this process is a leftover (zombie) and must stop writing`,
    )
  }
}

export class CheckpointKindError extends TaskpointError {
  constructor(expected: string, got: CheckpointKind, id: string) {
    super('WrongKind', `checkpoint ${id} is a ${got} checkpoint, not ${expected}: use ${got === 'state' ? 'readState()' : got === 'files' ? 'restore(dir)' : 'read()'}`)
  }
}

interface Snapshot {
  kind: CheckpointKind
  entries: PendingEntry[]
  json?: unknown
  options: WriteOptions
  /** The pooled buffer the entries live in, returned to the pool once committed. */
  buffer?: Uint8Array
}

export interface RestoreResult {
  info: CheckpointInfo
  files: string[]
}

export interface LoadedFiles {
  info: CheckpointInfo
  files: Map<string, Uint8Array>
  json: unknown
}

/**
 * Writes and reads checkpoints of one run under one storage root.
 *
 * Mechanism only: retention is a policy passed in (`keep`), and where the root is comes from the
 * caller (or the task context). Every write commits all chunks first and the manifest last, so a
 * crash at any instant leaves the previous checkpoint as the latest readable one.
 */
export class Checkpointer {
  readonly storage: Storage
  readonly writerId: string
  private readonly ownsStorage: boolean
  private readonly o: Required<Pick<CheckpointerOptions, 'chunkSize' | 'concurrency' | 'keep'>> & CheckpointerOptions
  private readonly cache: ManifestCache
  private names: ManifestName[] = []
  private epoch: number | undefined
  private registering: Promise<void> | undefined
  private known = new Set<string>()
  private lastStep: number | undefined
  private pending: Snapshot | undefined
  private inflight: Promise<void> | undefined
  private bgError: unknown
  private spare: Uint8Array[] = []
  private closed = false
  /** Checkpoints passed over by the last read because they were damaged. */
  lastSkipped: SkippedCheckpoint[] = []
  /** Statistics of the last commit. */
  lastUpload: UploadStats | undefined

  private constructor(storage: Storage, owns: boolean, options: CheckpointerOptions) {
    this.storage = storage
    this.ownsStorage = owns
    // Remote stores want more requests in flight than a local disk to reach their throughput.
    this.o = { chunkSize: 4 * MiB, concurrency: storage.backend === 'local' ? 8 : 16, keep: keepAll, ...options }
    if (!Number.isInteger(this.o.chunkSize) || this.o.chunkSize < 1024) throw new RangeError(`chunkSize must be a whole number >= 1024, got ${this.o.chunkSize}`)
    this.writerId = options.writerId ?? `${Date.now().toString(36)}${randomBytes(5).toString('hex')}`
    if (!/^[0-9a-z]{1,40}$/.test(this.writerId)) throw new RangeError('writerId must be 1-40 characters of [0-9a-z]')
    this.cache = new ManifestCache(storage)
  }

  /** Opens a checkpoint location (`/dir`, `file://…`, `s3://bucket/prefix`, `gs://bucket/prefix`, or a Storage). */
  static async open(target: string | Storage, options: CheckpointerOptions = {}): Promise<Checkpointer> {
    const owns = typeof target === 'string'
    const storage = typeof target === 'string' ? await openStorage(target, options.storage) : target
    const cp = new Checkpointer(storage, owns, options)
    if (options.repro !== false) void reproInfo() // start it now; the first commit awaits it
    try {
      cp.names = await listManifestNames(storage)
    } catch (e) {
      if (owns) await storage.close()
      throw e
    }
    cp.lastStep = cp.names.at(-1)?.step
    return cp
  }

  get uri(): string {
    return this.storage.uri
  }

  /** Whether a committed checkpoint existed when opened (or one was written since). Like Flyte's `prev_exists()`. */
  prevExists(): boolean {
    return this.names.length > 0
  }

  /** Committed checkpoints, oldest first. Damaged ones are left out and reported in `lastSkipped`. */
  async list(): Promise<CheckpointInfo[]> {
    const { infos, skipped, names } = await readInfos(this.storage, this.cache)
    this.names = names
    this.lastSkipped = skipped
    return infos
  }

  /** The newest committed checkpoint whose manifest is intact, or undefined. Reads newest first, not the whole list. */
  async latest(): Promise<CheckpointInfo | undefined> {
    return (await this.resolve(undefined, async () => undefined, false))?.info
  }

  // ---------------------------------------------------------------- reading

  /**
   * Finds the newest checkpoint that reads back completely and verifies, falling back past damaged
   * ones (reported via `onWarning` and `lastSkipped`). `id` pins one checkpoint (no fallback).
   */
  private async resolve<T>(id: string | undefined, load: (m: Manifest, key: string) => Promise<T>, warnSkips = true): Promise<{ value: T; info: CheckpointInfo } | undefined> {
    this.lastSkipped = []
    if (id !== undefined) {
      const m = await this.cache.get(id)
      return { value: await load(m, id), info: infoOf(id, m) }
    }
    this.names = await listManifestNames(this.storage)
    for (let i = this.names.length - 1; i >= 0; i--) {
      const key = this.names[i]!.key
      try {
        const m = await this.cache.get(key)
        return { value: await load(m, key), info: infoOf(key, m) }
      } catch (e) {
        if (!(e instanceof CorruptCheckpointError)) throw e
        this.lastSkipped.push({ id: key, reason: e.message })
        if (warnSkips) this.warn(`skipping damaged checkpoint: ${e.message}`)
      }
    }
    return undefined
  }

  /** Every file of a checkpoint, verified, in memory. */
  async load(id?: string): Promise<LoadedFiles | undefined> {
    this.throwBackgroundError()
    const r = await this.resolve(id, async (m, key) => {
      const files = new Map<string, Uint8Array>()
      let done = 0
      for (const f of m.files) {
        files.set(
          f.path,
          await readEntry(this.storage, key, f, this.o.concurrency, (n) => {
            done += n
            this.o.onProgress?.({ phase: 'download', loaded: done, total: m.totalSize, uploaded: 0, step: m.step })
          }),
        )
      }
      return { files, json: m.json }
    })
    return r && { info: r.info, files: r.value.files, json: r.value.json }
  }

  /**
   * Copies the newest intact checkpoint of `source` (another location) into this one as a new
   * commit, verified on the way. Engines like Flyte hand each attempt the previous attempt's
   * checkpoint under a different prefix: copying it forward at start keeps it alive even when this
   * attempt dies before its own first save.
   */
  async copyLatestFrom(source: Checkpointer): Promise<CheckpointInfo | undefined> {
    const got = await source.load()
    if (!got) return undefined
    const m = await source.cache.get(got.info.id)
    const packed = got.files.get(STATE_FILE)
    const entries: PendingEntry[] =
      m.kind === 'state' && packed
        ? (m.arrays ?? []).map((a) => ({ path: a.name, size: a.size, dtype: a.dtype, ...(a.shape ? { shape: a.shape } : {}), source: packed.subarray(a.offset, a.offset + a.size) }))
        : m.files.map((f) => {
            const e: PendingEntry = { path: f.path, size: f.size, source: got.files.get(f.path)! }
            if (f.mode !== undefined) e.mode = f.mode
            return e
          })
    const snap: Snapshot = { kind: m.kind, entries, options: { step: m.step, metadata: { ...m.metadata, copiedFrom: `${source.uri}/${got.info.id}` } } }
    if (m.json !== undefined) snap.json = m.json
    await this.flush()
    return this.commit(snap)
  }

  /** The bytes of the latest checkpoint, or undefined if there is none. Like Flyte's `cp.read()`. */
  async read(id?: string): Promise<Uint8Array | undefined> {
    const got = await this.load(id)
    if (!got) return undefined
    if (got.info.kind !== 'bytes') throw new CheckpointKindError('a bytes checkpoint', got.info.kind, got.info.id)
    return got.files.get('data') ?? new Uint8Array(0)
  }

  /** The arrays and JSON of the latest state checkpoint. */
  async readState(id?: string): Promise<LoadedState | undefined> {
    const got = await this.load(id)
    if (!got) return undefined
    if (got.info.kind !== 'state') throw new CheckpointKindError('a state checkpoint', got.info.kind, got.info.id)
    const m = await this.cache.get(got.info.id)
    const arrays: Record<string, StateArray> = {}
    const packed = got.files.get(STATE_FILE) ?? new Uint8Array(0)
    for (const e of m.arrays ?? []) {
      const a: StateArray = { data: packed.subarray(e.offset, e.offset + e.size), dtype: e.dtype }
      if (e.shape) a.shape = e.shape
      arrays[e.name] = a
    }
    return { info: got.info, arrays, json: got.json }
  }

  /**
   * Writes the latest checkpoint's files under `dir` (created if needed), streaming chunk by chunk
   * with verification. Bytes checkpoints become `dir/data`. Returns undefined when there is none.
   */
  async restore(dir: string, options: { id?: string } = {}): Promise<RestoreResult | undefined> {
    this.throwBackgroundError()
    const root = path.resolve(dir)
    const r = await this.resolve(options.id, async (m, key) => {
      // Verify everything first, into temp files, then move into place: a damaged checkpoint
      // leaves the directory as it was and the caller falls back to the previous one.
      const staged: { tmp: string; final: string; mode?: number }[] = []
      let done = 0
      try {
        for (const f of m.files) {
          const final = path.join(root, ...validateEntryPath(f.path).split('/'))
          if (!final.startsWith(root + path.sep)) throw new CorruptCheckpointError(key, `file ${f.path} would land outside ${root}`)
          await fs.mkdir(path.dirname(final), { recursive: true })
          const tmp = `${final}${TEMP_MARK}${randomBytes(4).toString('hex')}`
          staged.push({ tmp, final, ...(f.mode !== undefined ? { mode: f.mode } : {}) })
          const fh = await fs.open(tmp, 'w', 0o644)
          try {
            const free: Uint8Array[] = []
            await eachChunk(f, this.o.concurrency, async (c, at) => {
              const buf = free.pop() ?? sharedBytes(m.chunkSize)
              try {
                const bytes = await fetchChunk(this.storage, key, c.hash, c.size, buf)
                let w = 0
                while (w < bytes.byteLength) w += (await fh.write(bytes, w, bytes.byteLength - w, at + w)).bytesWritten
              } finally {
                free.push(buf)
              }
              done += c.size
              this.o.onProgress?.({ phase: 'download', loaded: done, total: m.totalSize, uploaded: 0, step: m.step })
            })
            await fh.truncate(f.size)
          } finally {
            await fh.close()
          }
        }
        for (const s of staged) {
          await fs.rename(s.tmp, s.final)
          if (s.mode !== undefined) await fs.chmod(s.final, s.mode & 0o7777)
        }
      } catch (e) {
        await Promise.all(staged.map((s) => fs.rm(s.tmp, { force: true })))
        throw e
      }
      return m.files.map((f) => f.path)
    })
    return r && { info: r.info, files: r.value }
  }

  // ---------------------------------------------------------------- writing

  /**
   * Commits a checkpoint and resolves once it is durable and visible: chunks first, manifest last.
   * The caller must not change `data` until the promise settles (use `writeAsync` to go on at once).
   */
  async write(data: ArrayBufferView | StateInput, options: WriteOptions = {}): Promise<CheckpointInfo> {
    this.checkOpen()
    await this.flush()
    // The same snapshot as writeAsync: a warm copy into shared memory costs far less than it
    // saves, because worker threads can then hash the chunks in parallel with the uploads.
    const snap = this.snapshot(data, options)
    try {
      return await this.commit(snap)
    } finally {
      this.spare.push(snap.buffer!)
    }
  }

  /**
   * Snapshots `data` into a reused buffer and returns at once; the commit runs in the background.
   * At most one commit is in flight: a newer snapshot replaces one still waiting (latest wins), so
   * calling this every step costs one memory copy and memory stays bounded. Errors of background
   * commits are thrown by the next call, `flush()` or `close()`.
   */
  writeAsync(data: ArrayBufferView | StateInput, options: WriteOptions = {}): void {
    this.checkOpen()
    this.throwBackgroundError()
    if (this.pending?.buffer) this.spare.push(this.pending.buffer)
    this.pending = this.snapshot(data, options)
    this.pump()
  }

  /** Copies the caller's data into one pooled shared buffer; JSON is copied by value. */
  private snapshot(data: ArrayBufferView | StateInput, options: WriteOptions): Snapshot {
    const described = describe(data, options)
    const total = described.entries.reduce((s, e) => s + e.size, 0)
    const buffer = this.takeBuffer(total)
    const dst = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    let off = 0
    for (const e of described.entries) {
      const src = e.source as Uint8Array
      // Buffer#copy is a memmove; TypedArray#set into shared memory is several times slower.
      Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(dst, off)
      e.source = buffer.subarray(off, off + e.size)
      off += e.size
    }
    if (described.json !== undefined) described.json = JSON.parse(JSON.stringify(described.json))
    described.buffer = buffer
    return described
  }

  /** Saves a file or a directory tree (regular files, recursively; symlinks are skipped with a warning). */
  async save(source: string, options: WriteOptions = {}): Promise<CheckpointInfo> {
    this.checkOpen()
    await this.flush()
    const root = path.resolve(source)
    const st = await fs.stat(root)
    const files: { rel: string; abs: string; size: number; mode: number }[] = []
    if (st.isFile()) files.push({ rel: path.basename(root), abs: root, size: st.size, mode: st.mode })
    else await walkDir(root, '', files, (m) => this.warn(m))
    const handles: fs.FileHandle[] = []
    const entries: PendingEntry[] = files.map((f) => {
      let fh: Promise<fs.FileHandle> | undefined
      return {
        path: validateEntryPath(f.rel),
        size: f.size,
        mode: f.mode & 0o7777,
        source: async (buf, offset) => {
          fh ??= fs.open(f.abs, 'r').then((h) => (handles.push(h), h))
          return (await (await fh).read(buf, 0, buf.byteLength, offset)).bytesRead
        },
      }
    })
    try {
      return await this.commit({ kind: 'files', entries, options })
    } finally {
      await Promise.all(handles.map((h) => h.close()))
    }
  }

  /** Waits for background commits; throws the first background error (once). */
  async flush(): Promise<void> {
    while (this.inflight) await this.inflight
    this.throwBackgroundError()
  }

  /** Flushes and releases the storage (if this checkpointer opened it). */
  async close(): Promise<void> {
    if (this.closed) return
    try {
      await this.flush()
    } finally {
      this.closed = true
      this.spare = []
      if (this.ownsStorage) await this.storage.close()
    }
  }

  private pump(): void {
    if (this.inflight || !this.pending) return
    const snap = this.pending
    this.pending = undefined
    this.inflight = (async () => {
      // Let the caller's synchronous code go on before any hashing starts.
      await new Promise((r) => setImmediate(r))
      await this.commit(snap)
    })()
      .catch((e: unknown) => {
        this.bgError ??= e
      })
      .finally(() => {
        if (snap.buffer) this.spare.push(snap.buffer)
        this.inflight = undefined
        this.pump()
      })
  }

  private takeBuffer(size: number): Uint8Array {
    // Reuse the smallest spare that fits: a warm buffer copies ~50x faster than fresh pages.
    let best = -1
    for (let i = 0; i < this.spare.length; i++) {
      const b = this.spare[i]!
      if (b.byteLength >= size && (best < 0 || b.byteLength < this.spare[best]!.byteLength)) best = i
    }
    if (best >= 0) return this.spare.splice(best, 1)[0]!.subarray(0, size)
    // Keep at most two buffers around (one committing, one pending).
    if (this.spare.length >= 2) this.spare.shift()
    return sharedBytes(size)
  }

  /**
   * Takes over this location as its newest writer: any writer that claimed it earlier fails its
   * next commit with FencedError. Writing claims implicitly; a task runner claims at the start of
   * an attempt so that an abandoned earlier attempt can never claim after it.
   */
  async claim(): Promise<void> {
    this.checkOpen()
    await this.register()
  }

  private async register(): Promise<void> {
    this.registering ??= (async () => {
      const names = await listManifestNames(this.storage)
      const markers = await this.markers()
      const epoch = Math.max(0, ...names.map((n) => n.epoch), ...markers.map((m) => m.epoch)) + 1
      const key = `${WRITER_DIR}${String(epoch).padStart(8, '0')}-${this.writerId}.json`
      await this.storage.put(key, Buffer.from(JSON.stringify({ writer: this.writerId, epoch, attempt: this.o.attempt, at: new Date().toISOString(), pid: process.pid })), {
        ifAbsent: true,
      })
      this.epoch = epoch
      // The chunks of the newest checkpoint are known to be stored: they are never sent again.
      const newest = names.at(-1)
      if (newest) {
        try {
          const m = await this.cache.get(newest.key)
          this.known = new Set(m.files.flatMap((f) => f.chunks.map((c) => c.hash)))
        } catch (e) {
          if (!(e instanceof CorruptCheckpointError)) throw e
        }
      }
    })()
    try {
      await this.registering
    } catch (e) {
      this.registering = undefined
      throw e
    }
  }

  private async markers(): Promise<{ epoch: number; writer: string }[]> {
    const out: { epoch: number; writer: string }[] = []
    for await (const o of this.storage.list(WRITER_DIR)) {
      const m = /^writers\/(\d{8})-([0-9a-z]+)\.json$/.exec(o.key)
      if (m) out.push({ epoch: Number(m[1]), writer: m[2]! })
    }
    return out
  }

  /** Throws FencedError when a writer of a higher epoch (or the same epoch, higher id) exists. */
  private async checkFence(names: ManifestName[]): Promise<void> {
    const mine = { epoch: this.epoch!, writer: this.writerId }
    const newer = [...(await this.markers()), ...names].find((o) => o.epoch > mine.epoch || (o.epoch === mine.epoch && o.writer > mine.writer))
    if (newer) throw new FencedError(this.writerId, `writer ${newer.writer}, epoch ${newer.epoch}`)
  }

  private async commit(snap: Snapshot): Promise<CheckpointInfo> {
    await this.register()
    const total = snap.entries.reduce((s, e) => s + e.size, 0)
    const step = snap.options.step ?? (this.lastStep === undefined ? 0 : this.lastStep + 1)
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step must be a whole number >= 0, got ${step}`)
    const { entries, arrays } = snap.kind === 'state' ? packState(snap.entries) : { entries: snap.entries, arrays: undefined }
    const { files, stats } = await uploadChunks(this.storage, entries, {
      chunkSize: this.o.chunkSize,
      concurrency: this.o.concurrency,
      known: this.known,
      onProgress: (loaded, uploaded) => this.o.onProgress?.({ phase: 'upload', loaded, total, uploaded, step }),
    })
    // All chunks are durable. Now the manifest: its existence is the commit.
    const names = await listManifestNames(this.storage)
    await this.checkFence(names)
    const seq = Math.max(0, ...names.map((n) => n.seq)) + 1
    const m: Manifest = {
      format: FORMAT_VERSION,
      kind: snap.kind,
      seq,
      epoch: this.epoch!,
      writer: this.writerId,
      step,
      createdAt: new Date().toISOString(),
      chunkSize: this.o.chunkSize,
      totalSize: total,
      metadata: snap.options.metadata ?? {},
      repro: this.o.repro === false ? {} : { ...(await reproInfo()), ...(typeof this.o.repro === 'object' ? this.o.repro : {}) },
      files,
    }
    if (this.o.attempt !== undefined) m.attempt = this.o.attempt
    if (snap.json !== undefined) m.json = snap.json
    if (arrays) m.arrays = arrays
    const key = manifestKey(m)
    await this.storage.put(key, encodeManifest(m), { ifAbsent: true })
    this.known = new Set(files.flatMap((f) => f.chunks.map((c) => c.hash)))
    this.lastStep = step
    this.lastUpload = stats
    this.names = [...names, { key, epoch: m.epoch, seq, step, writer: this.writerId }]
    if (this.o.keep !== keepAll) await this.applyRetention()
    return infoOf(key, m)
  }

  private async applyRetention(): Promise<void> {
    // Retention problems never fail the commit that already succeeded; they are reported.
    try {
      const r = await prune(this.storage, this.o.keep, this.cache)
      if (r.deleted.length > 0 && this.o.gc?.enabled !== false) {
        await collectGarbage(this.storage, this.o.gc?.minAgeMs !== undefined ? { minAgeMs: this.o.gc.minAgeMs } : {}, this.cache)
      }
    } catch (e) {
      this.warn(`retention after commit failed (will retry after the next commit): ${(e as Error).message}`)
    }
  }

  private throwBackgroundError(): void {
    if (this.bgError !== undefined) {
      const e = this.bgError
      this.bgError = undefined
      throw e
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new TaskpointError('Closed', 'this Checkpointer is closed; open a new one')
  }

  private warn(message: string): void {
    ;(this.o.onWarning ?? ((msg: string) => console.warn(`[taskpoint] ${msg}`)))(message)
  }
}

/**
 * Lays the arrays of a state checkpoint back to back in one file. Snapshots already hold them
 * contiguously in one buffer, which is then used as is; anything else is copied together once.
 */
function packState(entries: PendingEntry[]): { entries: PendingEntry[]; arrays: ArrayEntry[] } {
  const arrays: ArrayEntry[] = []
  let offset = 0
  for (const e of entries) {
    const a: ArrayEntry = { name: e.path, dtype: e.dtype ?? 'bytes', offset, size: e.size }
    if (e.shape) a.shape = e.shape
    arrays.push(a)
    offset += e.size
  }
  const views = entries.map((e) => e.source as Uint8Array)
  const first = views[0]
  const contiguous = first !== undefined && views.every((v, i) => v.buffer === first.buffer && v.byteOffset === first.byteOffset + arrays[i]!.offset)
  let bytes: Uint8Array
  if (contiguous) bytes = new Uint8Array(first.buffer, first.byteOffset, offset)
  else {
    bytes = sharedBytes(offset)
    views.forEach((v, i) => bytes.set(v, arrays[i]!.offset))
  }
  return { entries: [{ path: STATE_FILE, size: offset, source: bytes }], arrays }
}

function toBytes(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
}

function dtypeOf(v: ArrayBufferView): DType {
  if (v instanceof Float32Array) return 'float32'
  if (v instanceof Int32Array) return 'int32'
  if (v instanceof Float64Array) return 'float64'
  if (v instanceof Int8Array) return 'int8'
  if (v instanceof Int16Array) return 'int16'
  if (v instanceof Uint16Array) return 'uint16'
  if (v instanceof Uint32Array) return 'uint32'
  if (v instanceof Uint8Array) return 'uint8'
  return 'bytes'
}

/** Turns user input into entries pointing at the caller's memory (no copy yet). */
function describe(data: ArrayBufferView | StateInput, options: WriteOptions): Snapshot {
  if (ArrayBuffer.isView(data)) {
    const bytes = toBytes(data)
    return { kind: 'bytes', entries: [{ path: 'data', size: bytes.byteLength, source: bytes }], options }
  }
  if (!data || typeof data !== 'object' || typeof data.arrays !== 'object') {
    throw new TypeError('write() takes bytes (a TypedArray/Buffer) or { arrays: { name: TypedArray }, json?: any }')
  }
  const entries: PendingEntry[] = Object.entries(data.arrays).map(([name, a]) => {
    const input: ArrayInput = ArrayBuffer.isView(a) ? { data: a } : a
    if (!input || !ArrayBuffer.isView(input.data)) throw new TypeError(`array "${name}" is not a TypedArray (or { data: TypedArray })`)
    const bytes = toBytes(input.data)
    const e: PendingEntry = { path: validateEntryPath(name), size: bytes.byteLength, dtype: input.dtype ?? dtypeOf(input.data), source: bytes }
    if (input.shape) e.shape = [...input.shape]
    return e
  })
  const snap: Snapshot = { kind: 'state', entries, options }
  if (data.json !== undefined) snap.json = data.json
  return snap
}

async function walkDir(root: string, rel: string, out: { rel: string; abs: string; size: number; mode: number }[], warn: (m: string) => void): Promise<void> {
  const dir = rel ? path.join(root, rel) : root
  const ents = await fs.readdir(dir, { withFileTypes: true })
  ents.sort((a, b) => (a.name < b.name ? -1 : 1))
  for (const e of ents) {
    const r = rel ? `${rel}/${e.name}` : e.name
    if (e.isDirectory()) await walkDir(root, r, out, warn)
    else if (e.isFile()) {
      const st = await fs.stat(path.join(root, r))
      out.push({ rel: r, abs: path.join(root, r), size: st.size, mode: st.mode })
    } else warn(`not saving ${path.join(root, r)}: only regular files and directories are checkpointed`)
  }
}
