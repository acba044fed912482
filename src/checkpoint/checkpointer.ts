import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { TaskpointError } from '../errors.js'
import {
  CorruptCheckpointError,
  FORMAT_VERSION,
  STATE_FILE,
  WRITER_DIR,
  WRITER_ID,
  encodeManifest,
  manifestKey,
  type CheckpointKind,
  type Manifest,
  type ManifestName,
} from '../format/manifest.js'
import { openStorage, type OpenStorageOptions } from '../storage/resolve.js'
import type { Storage } from '../storage/types.js'
import { uploadChunks, type PendingEntry, type UploadStats } from './commit.js'
import { fileEntries } from './files.js'
import { collectGarbage, prune, readInfos } from './gc.js'
import { ChunkLedger } from './ledger.js'
import { acquireShared, type LockOptions } from './locks.js'
import { ManifestCache, infoOf, listManifestNames, readEntry } from './reader.js'
import { reproInfo } from './repro.js'
import { restoreFiles } from './restore.js'
import { stateArray } from './typed.js'
import { keepAll, type RetentionPolicy } from './retention.js'
import { BufferPool, checkWriteOptions, copyInto, describe, packState, snapshotSize, type Snapshot } from './snapshot.js'
import type { CheckpointInfo, CheckpointProgress, LoadedState, SkippedCheckpoint, StateArray, StateInput, WriteOptions } from './types.js'

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
  /** Timing of the locks that keep garbage collection off a commit in flight (see `LockOptions`). */
  locks?: LockOptions
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
 * caller (or the task context). Commits run one at a time, in call order, each chunks first and
 * manifest last under a shared lock, so a crash at any instant leaves the previous checkpoint as
 * the latest readable one and garbage collection never deletes a chunk a commit is about to use.
 */
export class Checkpointer {
  readonly storage: Storage
  readonly writerId: string
  private readonly ownsStorage: boolean
  private readonly o: Required<Pick<CheckpointerOptions, 'chunkSize' | 'concurrency' | 'keep'>> & CheckpointerOptions
  private readonly cache: ManifestCache
  private readonly ledger = new ChunkLedger()
  private readonly pool = new BufferPool(2)
  private names: ManifestName[] = []
  private epoch: number | undefined
  private registering: Promise<void> | undefined
  private lastStep: number | undefined
  /** Commits run one after another on this chain, in the order they were asked for. */
  private tail: Promise<unknown> = Promise.resolve()
  /** The newest writeAsync snapshot not yet taken by a commit (latest wins). */
  private pending: Snapshot | undefined
  private bgError: unknown
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
    if (!Number.isInteger(this.o.chunkSize) || this.o.chunkSize < 1024 || this.o.chunkSize > 1024 * MiB) {
      throw new RangeError(`chunkSize must be a whole number from 1024 to 1 GiB, got ${this.o.chunkSize}`)
    }
    this.writerId = options.writerId ?? `${Date.now().toString(36)}${randomBytes(5).toString('hex')}`
    if (!WRITER_ID.test(this.writerId)) throw new RangeError('writerId must be 1-40 characters of [0-9a-z]')
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
    // Retention in another process may delete what this walk was about to read: when a checkpoint
    // vanished underneath, the walk starts again from a fresh listing instead of falling back to
    // older (also deleted) ones and reporting that there is nothing.
    for (let round = 0; ; round++) {
      this.names = await listManifestNames(this.storage)
      let vanished = false
      for (let i = this.names.length - 1; i >= 0; i--) {
        const key = this.names[i]!.key
        try {
          const m = await this.cache.get(key)
          return { value: await load(m, key), info: infoOf(key, m) }
        } catch (e) {
          if (!(e instanceof CorruptCheckpointError)) throw e
          if (e.vanished || !(await this.storage.head(key))) {
            vanished = true
            continue
          }
          this.lastSkipped.push({ id: key, reason: e.message })
          if (warnSkips) this.warn(`skipping damaged checkpoint: ${e.message}`)
        }
      }
      if (!vanished || round >= 4) return undefined
      this.lastSkipped = []
    }
  }

  /** Every file of a checkpoint, verified, in memory. */
  async load(id?: string): Promise<LoadedFiles | undefined> {
    this.throwBackgroundError()
    const r = await this.resolve(id, async (m, key) => {
      const files = new Map<string, Uint8Array>()
      let done = 0
      for (const f of m.files) {
        const onBytes = (n: number): void => {
          done += n
          this.o.onProgress?.({ phase: 'download', loaded: done, total: m.totalSize, uploaded: 0, step: m.step })
        }
        files.set(f.path, await readEntry(this.storage, key, f, this.o.concurrency, onBytes, this.ledger))
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
    return this.serially(() => this.commit(snap))
  }

  /**
   * The bytes of the newest intact checkpoint, or undefined if there is none. Like Flyte's
   * `cp.read()`. Throws CheckpointKindError (naming the method to use) when that checkpoint is a
   * state or files checkpoint: an older bytes checkpoint is never returned in its place.
   */
  async read(id?: string): Promise<Uint8Array | undefined> {
    const got = await this.load(id)
    if (!got) return undefined
    if (got.info.kind !== 'bytes') throw new CheckpointKindError('a bytes checkpoint', got.info.kind, got.info.id)
    return got.files.get('data') ?? new Uint8Array(0)
  }

  /**
   * The arrays and JSON of the newest intact checkpoint, which must be a state checkpoint (else
   * CheckpointKindError). Arrays come back as typed arrays of their stored dtype with their shape.
   */
  async readState(id?: string): Promise<LoadedState | undefined> {
    const got = await this.load(id)
    if (!got) return undefined
    if (got.info.kind !== 'state') throw new CheckpointKindError('a state checkpoint', got.info.kind, got.info.id)
    const m = await this.cache.get(got.info.id)
    const arrays: Record<string, StateArray> = {}
    const packed = got.files.get(STATE_FILE) ?? new Uint8Array(0)
    for (const e of m.arrays ?? []) arrays[e.name] = stateArray(packed, e)
    return { info: got.info, arrays, json: got.json }
  }

  /**
   * Writes the latest checkpoint's files under `dir` (created if needed), verified chunk by chunk;
   * nothing is moved into place unless all of it verified. Bytes checkpoints become `dir/data`.
   * Returns undefined when there is none.
   */
  async restore(dir: string, options: { id?: string } = {}): Promise<RestoreResult | undefined> {
    this.throwBackgroundError()
    const root = path.resolve(dir)
    let done = 0
    const r = await this.resolve(options.id, (m, key) =>
      restoreFiles(this.storage, key, m, root, {
        concurrency: Math.min(this.o.concurrency, 8),
        witness: this.ledger,
        onBytes: (n) => {
          done += n
          this.o.onProgress?.({ phase: 'download', loaded: done, total: m.totalSize, uploaded: 0, step: m.step })
        },
      }),
    )
    return r && { info: r.info, files: r.value }
  }

  // ---------------------------------------------------------------- writing

  /**
   * Commits a checkpoint and resolves once it is durable and visible: chunks first, manifest last.
   * Writes commit in call order, after any writeAsync before them. The caller must not change
   * `data` until the promise settles (use `writeAsync` to go on at once).
   */
  async write(data: ArrayBufferView | StateInput, options: WriteOptions = {}): Promise<CheckpointInfo> {
    this.checkOpen()
    this.throwBackgroundError()
    // Validated now, copied when its turn comes: nothing is refused after the call returned.
    const opts = checkWriteOptions(options)
    const described = describe(data, opts)
    this.checkStep(opts)
    return this.serially(async () => {
      // The same snapshot as writeAsync: a warm copy into shared memory costs far less than it
      // saves, because worker threads can then hash the chunks in parallel with the uploads.
      copyInto(described, this.pool.take(snapshotSize(described)))
      try {
        return await this.commit(described)
      } finally {
        this.pool.give(described.buffer)
      }
    })
  }

  /**
   * Snapshots `data` into a reused buffer and returns at once; the commit runs in the background.
   * At most one commit is in flight: a newer snapshot replaces one still waiting (latest wins), so
   * calling this every step costs one memory copy, and at most two snapshot buffers exist. Errors
   * of background commits are thrown by the next call, `flush()` or `close()`.
   */
  writeAsync(data: ArrayBufferView | StateInput, options: WriteOptions = {}): void {
    this.checkOpen()
    this.throwBackgroundError()
    const opts = checkWriteOptions(options)
    const described = describe(data, opts)
    this.checkStep(opts)
    const replaced = this.pending
    this.pending = undefined
    // The waiting snapshot's buffer goes back first, so the new copy can reuse it.
    this.pool.give(replaced?.buffer)
    copyInto(described, this.pool.take(snapshotSize(described)))
    this.pending = described
    if (replaced) return // a commit for the waiting snapshot is already queued; it takes this one
    void this.serially(async () => {
      // Let the caller's synchronous code go on before any hashing starts.
      await nextTurn()
      const snap = this.pending
      this.pending = undefined
      if (!snap) return
      try {
        await this.commit(snap)
      } catch (e) {
        this.bgError ??= e
      } finally {
        this.pool.give(snap.buffer)
      }
    })
  }

  /** Saves a file or a directory tree (regular files, recursively; symlinks are skipped with a warning). */
  async save(source: string, options: WriteOptions = {}): Promise<CheckpointInfo> {
    this.checkOpen()
    this.throwBackgroundError()
    const opts = checkWriteOptions(options)
    this.checkStep(opts)
    return this.serially(async () => {
      const { entries, closeAll } = await fileEntries(source, (m) => this.warn(m))
      try {
        return await this.commit({ kind: 'files', entries, options: opts })
      } finally {
        await closeAll()
      }
    })
  }

  /** Waits for background commits; throws the first background error (once). */
  async flush(): Promise<void> {
    for (let t = this.tail; ; t = this.tail) {
      await t.catch(() => {})
      if (t === this.tail) break
    }
    this.throwBackgroundError()
  }

  /** Flushes and releases the storage (if this checkpointer opened it). */
  async close(): Promise<void> {
    if (this.closed) return
    try {
      await this.flush()
    } finally {
      this.closed = true
      this.pool.clear()
      if (this.ownsStorage) await this.storage.close()
    }
  }

  /** Runs `job` after every commit asked for before it. */
  private serially<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job)
    this.tail = run.catch(() => {})
    return run
  }

  private checkStep(o: WriteOptions): void {
    if (o.step === undefined && this.lastStep !== undefined && this.lastStep >= Number.MAX_SAFE_INTEGER) {
      throw new TaskpointError('InvalidOption', `the last step is ${this.lastStep}: there is no next step; pass { step } explicitly`)
    }
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
      const top = [...names, ...markers].reduce((mx, n) => Math.max(mx, n.epoch), 0)
      if (top >= Number.MAX_SAFE_INTEGER) {
        throw new TaskpointError('EpochExhausted', `${this.uri}: a stored manifest or writer marker claims epoch ${top}, the largest there can be, so no writer can ever take over; remove it (see \`taskpoint ls\`)`)
      }
      const epoch = top + 1
      const key = `${WRITER_DIR}${String(epoch).padStart(8, '0')}-${this.writerId}.json`
      await this.storage.put(key, Buffer.from(JSON.stringify({ writer: this.writerId, epoch, attempt: this.o.attempt, at: new Date().toISOString(), pid: process.pid })), {
        ifAbsent: true,
      })
      this.epoch = epoch
      // Leftovers of killed writers: only ones far older than any live write could be.
      if (this.storage.sweep) {
        void this.storage.sweep({ olderThanMs: this.o.locks?.staleMs ?? 10 * 60_000 }).catch((e: unknown) => this.warn(`sweeping leftovers failed: ${(e as Error).message}`))
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
      const m = /^writers\/(\d{8,16})-([0-9a-z]{1,40})\.json$/.exec(o.key)
      if (m && Number.isSafeInteger(Number(m[1]))) out.push({ epoch: Number(m[1]), writer: m[2]! })
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
    const total = snapshotSize(snap)
    const step = snap.options.step ?? (this.lastStep === undefined ? 0 : this.lastStep + 1)
    const { entries, arrays } = snap.kind === 'state' ? packState(snap.entries) : { entries: snap.entries, arrays: undefined }
    const upload = (known: { has(hash: string, size: number): boolean }) =>
      uploadChunks(this.storage, entries, {
        chunkSize: this.o.chunkSize,
        concurrency: this.o.concurrency,
        known,
        onProgress: (loaded, uploaded) => this.o.onProgress?.({ phase: 'upload', loaded, total, uploaded, step }),
      })
    const nothingKnown = { has: () => false }
    let info: CheckpointInfo | undefined
    for (let round = 0; !info; round++) {
      const lock = await acquireShared(this.storage, this.writerId, this.o.locks)
      try {
        // Chunks this writer skips are protected by the manifests that reference them; under the
        // lock, no collector can start, so checking that those still exist is enough.
        for (const a of this.ledger.anchors()) if (!(await this.storage.head(a))) this.ledger.dropAnchor(a)
        const { files, stats } = await upload(this.ledger)
        // All chunks are durable. Now the manifest: its existence is the commit.
        const names = await listManifestNames(this.storage)
        await this.checkFence(names)
        const lost = await lock.check()
        if (lost !== undefined) {
          // A collector may have taken us for dead and deleted chunks we rely on: start over
          // trusting nothing stored.
          this.ledger.clear()
          if (round < 2) continue
          throw new TaskpointError('LockLost', `${this.uri}: commit abandoned, its lock could not be kept (${lost}); the checkpoint was not written. Check the connection to the store and that processes are not paused for minutes`)
        }
        const m = await this.manifest(snap, names, step, files, arrays)
        const key = manifestKey(m)
        await this.storage.put(key, encodeManifest(m), { ifAbsent: true })
        if ((await lock.check()) !== undefined) {
          // Lost between the last check and the manifest: whatever a collector deleted is put back.
          await upload(nothingKnown)
        }
        this.ledger.committed(files, key)
        this.lastStep = step
        this.lastUpload = stats
        this.names = [...names, { key, epoch: m.epoch, seq: m.seq, step, writer: this.writerId }]
        info = infoOf(key, m)
      } finally {
        await lock.release().catch((e: unknown) => this.warn(`releasing the commit lock failed (it goes stale): ${(e as Error).message}`))
      }
    }
    if (this.o.keep !== keepAll) await this.applyRetention(info.id)
    return info
  }

  private async manifest(snap: Snapshot, names: ManifestName[], step: number, files: Manifest['files'], arrays: Manifest['arrays']): Promise<Manifest> {
    const seq = names.reduce((mx, n) => Math.max(mx, n.seq), 0) + 1
    if (!Number.isSafeInteger(seq)) throw new TaskpointError('SeqExhausted', `${this.uri}: a stored manifest has seq ${seq - 1}, the largest there can be; remove it`)
    const m: Manifest = {
      format: FORMAT_VERSION,
      kind: snap.kind,
      seq,
      epoch: this.epoch!,
      writer: this.writerId,
      step,
      createdAt: new Date().toISOString(),
      chunkSize: this.o.chunkSize,
      totalSize: snapshotSize(snap),
      metadata: snap.options.metadata ?? {},
      repro: this.o.repro === false ? {} : { ...(await reproInfo()), ...(typeof this.o.repro === 'object' ? this.o.repro : {}) },
      files,
    }
    if (this.o.attempt !== undefined) m.attempt = this.o.attempt
    if (snap.json !== undefined) m.json = snap.json
    if (arrays) m.arrays = arrays
    return m
  }

  private async applyRetention(intact: string): Promise<void> {
    // Retention problems never fail the commit that already succeeded; they are reported.
    try {
      const r = await prune(this.storage, this.o.keep, this.cache, { intact })
      if (r.deleted.length > 0 && this.o.gc?.enabled !== false) {
        const g = await collectGarbage(
          this.storage,
          { ...(this.o.gc?.minAgeMs !== undefined ? { minAgeMs: this.o.gc.minAgeMs } : {}), ...(this.o.locks ? { locks: this.o.locks } : {}), owner: this.writerId },
          this.cache,
        )
        if (g.skipped && g.blockedBy.length > 0) this.warn(`garbage collection skipped: ${g.skipped}`)
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
