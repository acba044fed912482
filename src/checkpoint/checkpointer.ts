import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { ConfigError, TaskpointError } from '../errors.js'
import { STATE_FILE, type Manifest } from '../format/manifest.js'
import { openStorage } from '../storage/resolve.js'
import type { Storage } from '../storage/types.js'
import type { UploadStats } from './commit.js'
import { ChunkCache } from './chunk-cache.js'
import { Committer } from './committer.js'
import { fileEntries } from './files.js'
import { readInfos, retainAfterCommit } from './gc.js'
import { CheckpointKindError, type CheckpointerOptions, type LoadedFiles, type RestoreResult } from './options.js'
import { ManifestCache, readFiles } from './reader.js'
import { recentManifestNames } from './recent.js'
import { reproInfo } from './repro.js'
import { CommitQueue } from './queue.js'
import { resolveNewest } from './resolve.js'
import { checkpointerSettings, type Settings } from './settings.js'
import { storePlace, type StorePlace } from './store-place.js'
import { restoreFiles } from './restore.js'
import { keepAll } from './retention.js'
import { stateArray } from './typed.js'
import { BufferPool, checkWriteOptions, describe, entriesOf, readFromCaller, type Snapshot } from './snapshot.js'
import type { CheckpointInfo, LoadedState, SkippedCheckpoint, StateArray, StateInput, WriteOptions } from './types.js'

export { FencedError } from './committer.js'
export { CheckpointKindError, type CheckpointerOptions, type LoadedFiles, type RestoreResult } from './options.js'

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
  private readonly o: Settings
  private readonly cache: ManifestCache
  private readonly committer: Committer
  /** Local copies of chunks read before (the `chunkCache` option), or undefined when off. */
  readonly chunkCache: ChunkCache | undefined
  private readonly pool = new BufferPool(2)
  private seenAny = false
  private readonly queue = new CommitQueue(this.pool)
  private closed = false
  /** Checkpoints passed over by the last read because they were damaged. */
  lastSkipped: SkippedCheckpoint[] = []

  /** `options` are read only through `this.o`, where null and undefined have become defaults. */
  private constructor(storage: Storage, owns: boolean, options: CheckpointerOptions) {
    this.storage = storage
    this.ownsStorage = owns
    // Remote stores want more requests in flight than a local disk (the defaults come from the storage's capabilities).
    this.o = checkpointerSettings(storage.capabilities, options)
    const packFilesUpTo = this.o.packFilesUpTo
    this.writerId = this.o.writerId ?? `${Date.now().toString(36)}${randomBytes(5).toString('hex')}`
    this.cache = new ManifestCache(storage)
    this.chunkCache = this.o.chunkCache ? new ChunkCache(this.o.chunkCache === true ? {} : this.o.chunkCache) : undefined
    this.committer = new Committer(storage, {
      writerId: this.writerId,
      chunkSize: this.o.chunkSize,
      concurrency: this.o.concurrency,
      packFilesUpTo,
      onWarning: (m) => this.warn(m),
      // Only where retention reads them after each commit: kept all, nothing reads them back.
      ...(this.o.keep !== keepAll ? { manifests: this.cache } : {}),
      ...(this.o.attempt !== undefined ? { attempt: this.o.attempt } : {}),
      ...(this.o.locks ? { locks: this.o.locks } : {}),
      ...(this.o.gc?.sweepAfterMs !== undefined ? { sweepAfterMs: this.o.gc.sweepAfterMs } : {}),
      ...(this.o.repro !== undefined ? { repro: this.o.repro } : {}),
      ...(this.o.onProgress ? { onProgress: this.o.onProgress } : {}),
    })
  }

  /** Statistics of the last commit. */
  get lastUpload(): UploadStats | undefined {
    return this.committer.lastUpload
  }

  /** Opens a checkpoint location (`/dir`, `file://…`, `s3://bucket/prefix`, `gs://bucket/prefix`, or a Storage). */
  static async open(target: string | Storage, options: CheckpointerOptions = {}): Promise<Checkpointer> {
    const owns = typeof target === 'string'
    const storage = typeof target === 'string' ? await openStorage(target, options.storage ?? undefined) : target
    let cp: Checkpointer
    try {
      cp = new Checkpointer(storage, owns, options)
    } catch (e) {
      // Options refused: a storage opened for them is not left open.
      if (owns) await storage.close()
      throw e
    }
    if (cp.o.repro !== false) void reproInfo() // start it now; the first commit awaits it
    try {
      const { names } = await recentManifestNames(storage)
      cp.seenAny = names.length > 0
      cp.committer.lastStep = names.at(-1)?.step
    } catch (e) {
      if (owns) await storage.close()
      throw e
    }
    return cp
  }

  get uri(): string {
    return this.storage.uri
  }

  /** Whether a committed checkpoint existed when opened (or one was written since). Like Flyte's `prev_exists()`. */
  prevExists(): boolean {
    return this.seenAny
  }

  /** Committed checkpoints, oldest first. Damaged ones are left out and reported in `lastSkipped`. */
  async list(): Promise<CheckpointInfo[]> {
    const { infos, skipped } = await readInfos(this.storage, this.cache)
    this.seenAny ||= infos.length + skipped.length > 0
    this.lastSkipped = skipped
    return infos
  }

  /** The newest committed checkpoint whose manifest is intact, or undefined. Reads newest first, not the whole list. */
  async latest(): Promise<CheckpointInfo | undefined> {
    return (await this.resolve(undefined, async () => undefined, false))?.info
  }

  // ---------------------------------------------------------------- reading

  /** The newest checkpoint `load` reads back (or the pinned `id`), passing over damaged ones. */
  private async resolve<T>(id: string | undefined, load: (m: Manifest, key: string) => Promise<T>, warnSkips = true): Promise<{ value: T; info: CheckpointInfo } | undefined> {
    this.lastSkipped = []
    let r: Awaited<ReturnType<typeof resolveNewest<T>>>
    try {
      r = await resolveNewest(this.storage, this.cache, id, load, (s) => {
        this.lastSkipped.push(s)
        if (warnSkips) this.warn(`skipping damaged checkpoint: ${s.reason}`)
      })
    } finally {
      // Chunks fetched by this read are in the cache before it returns (written while it downloaded).
      await this.chunkCache?.settle()
    }
    const { found, seen } = r
    if (seen) this.seenAny = true
    return found
  }

  /** Every file of a checkpoint, verified, in memory. */
  async load(id?: string): Promise<LoadedFiles | undefined> {
    this.queue.throwBackgroundError()
    const r = await this.resolve(id, async (m, key) => {
      let done = 0
      const onBytes = (n: number): void => {
        done += n
        this.o.onProgress?.({ phase: 'download', loaded: done, total: m.totalSize, uploaded: 0, step: m.step })
      }
      const files = await readFiles(this.storage, key, m, this.o.concurrency, onBytes, this.committer.ledger, this.chunkCache)
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
    const entries = entriesOf(m, got.files)
    const snap: Snapshot = { kind: m.kind, entries, options: { step: m.step, metadata: { ...m.metadata, copiedFrom: `${source.uri}/${got.info.id}` } } }
    if (m.json !== undefined) snap.json = m.json
    return this.queue.serially(() => this.commit(snap))
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
   * Throws a ConfigError when `dir` is the store's own directory or inside it (a local store):
   * restoring there would mix the checkpoint's files with the objects. With `replacing` (the
   * caller clears `dir` first, as the CLI's --clean does) a `dir` that holds the store is refused
   * too. `restore()` checks the first itself.
   */
  checkRestoreTarget(dir: string, options: { replacing?: boolean } = {}): void {
    const root = path.resolve(dir)
    const storeRoot = this.storage.capabilities.localRoot
    refuseOverlap(root, storeRoot, storePlace(root, storeRoot), options.replacing === true)
  }

  /**
   * Writes the latest checkpoint's files under `dir` (created if needed), verified chunk by chunk;
   * nothing is moved into place unless all of it verified. Bytes checkpoints become `dir/data`.
   * Returns undefined when there is none.
   */
  async restore(dir: string, options: { id?: string } = {}): Promise<RestoreResult | undefined> {
    this.queue.throwBackgroundError()
    const root = path.resolve(dir)
    const storeRoot = this.storage.capabilities.localRoot
    const place = storePlace(root, storeRoot)
    refuseOverlap(root, storeRoot, place, false)
    const keepOut = place && 'holds' in place ? place.holds : undefined
    let done = 0
    const r = await this.resolve(options.id, (m, key) =>
      restoreFiles(this.storage, key, m, root, {
        concurrency: Math.min(this.o.concurrency, 8),
        witness: this.committer.ledger,
        ...(keepOut !== undefined ? { keepOut } : {}),
        ...(this.chunkCache ? { cache: this.chunkCache } : {}),
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
    this.queue.throwBackgroundError()
    // Validated now, copied when its turn comes: nothing is refused after the call returned.
    const opts = checkWriteOptions(options)
    const described = describe(data, opts)
    this.checkStep(opts)
    return this.queue.serially(async () => {
      // Copied chunk by chunk as the commit cuts it (into shared memory, so worker threads hash
      // it), not into a snapshot of the whole state: the caller waits for this write anyway.
      readFromCaller(described)
      return this.commit(described)
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
    this.queue.throwBackgroundError()
    const opts = checkWriteOptions(options)
    const described = describe(data, opts)
    this.checkStep(opts)
    this.queue.offer(described, (snap) => this.commit(snap))
  }

  /** Saves a file or a directory tree (regular files, recursively; symlinks are skipped with a warning). */
  async save(source: string, options: WriteOptions = {}): Promise<CheckpointInfo> {
    this.checkOpen()
    this.queue.throwBackgroundError()
    const opts = checkWriteOptions(options)
    this.checkStep(opts)
    return this.queue.serially(async () => {
      const { entries, closeAll } = await fileEntries(source, (m) => this.warn(m), this.storage.capabilities.localRoot)
      try {
        return await this.commit({ kind: 'files', entries, options: opts })
      } finally {
        await closeAll()
      }
    })
  }

  /**
   * Whether a write is under way (queued or committing, background ones included). A loop that
   * seldom gives its event loop a turn can turn it more often while this is true: a commit's file
   * and network operations each resume on this thread.
   */
  get committing(): boolean {
    return this.queue.busy
  }

  /** Waits for background commits; throws the first background error (once). */
  async flush(): Promise<void> {
    await this.queue.drain()
    this.queue.throwBackgroundError()
  }

  /** Flushes and releases the storage (if this checkpointer opened it). */
  async close(): Promise<void> {
    if (this.closed) return
    try {
      await this.flush()
    } finally {
      this.closed = true
      await this.committer.stop()
      this.pool.clear()
      if (this.ownsStorage) await this.storage.close()
    }
  }

  private checkStep(o: WriteOptions): void {
    const last = this.committer.lastStep
    if (o.step === undefined && last !== undefined && last >= Number.MAX_SAFE_INTEGER) {
      throw new TaskpointError('InvalidOption', `the last step is ${last}: there is no next step; pass { step } explicitly`)
    }
  }

  /**
   * Takes over this location as its newest writer: any writer that claimed it earlier fails its
   * next commit with FencedError. Writing claims implicitly; a task runner claims at the start of
   * an attempt so that an abandoned earlier attempt can never claim after it.
   */
  async claim(): Promise<void> {
    this.checkOpen()
    await this.committer.claim()
  }

  private async commit(snap: Snapshot): Promise<CheckpointInfo> {
    const info = await this.committer.commit(snap)
    this.seenAny = true
    if (this.o.keep !== keepAll) await this.applyRetention(info.id)
    return info
  }

  private async applyRetention(intact: string): Promise<void> {
    // Retention problems never fail the commit that already succeeded; they are reported.
    const problem = await retainAfterCommit(this.storage, this.o.keep, this.cache, {
      intact,
      owner: this.writerId,
      ...(this.o.gc ? { gc: this.o.gc } : {}),
      ...(this.o.locks ? { locks: this.o.locks } : {}),
    })
    if (problem) this.warn(problem)
  }

  private checkOpen(): void {
    if (this.closed) throw new TaskpointError('Closed', 'this Checkpointer is closed; open a new one')
  }

  private warn(message: string): void {
    ;(this.o.onWarning ?? ((msg: string) => console.warn(`[taskpoint] ${msg}`)))(message)
  }
}

/**
 * A restore into the store's own directory (or one inside it) would mix the checkpoint's files with
 * the objects; replacing the contents of one that holds it would delete them: refused before
 * anything is written.
 */
function refuseOverlap(target: string, storeRoot: string | undefined, place: StorePlace | undefined, replacing: boolean): void {
  if (!place || ('holds' in place && !replacing)) return
  throw new ConfigError(`cannot restore into ${target}: it ${'holds' in place ? 'holds' : 'is inside'} the checkpoint store at ${storeRoot}; restore into a directory outside it`)
}
