import { ConfigError, TaskpointError } from '../errors.js'
import {
  CorruptCheckpointError,
  FORMAT_VERSION,
  MANIFEST_DIR,
  WRITER_DIR,
  chunkKey,
  chunksOf,
  decodeManifest,
  encodeManifest,
  listingStartFor,
  manifestKey,
  parseManifestKey,
  parseWriterMarker,
  sortsInKeyOrder,
  writerMarkerKey,
  type Manifest,
  type ManifestName,
} from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { uploadChunks, type UploadStats } from './commit.js'
import { warmHashing } from './hash.js'
import { ChunkLedger } from './ledger.js'
import { acquireShared, type LockOptions } from './locks.js'
import { infoOf, type ManifestCache } from './reader.js'
import { recentManifestNames, writeHint } from './recent.js'
import { reproInfo } from './repro.js'
import { packState, snapshotSize, type Snapshot } from './snapshot.js'
import type { CheckpointInfo, CheckpointProgress } from './types.js'

/** Thrown when a newer attempt has taken over this checkpoint location; this writer must stop. */
export class FencedError extends TaskpointError {
  constructor(
    readonly writer: string,
    readonly by: string,
  ) {
    super('Fenced', `writer ${writer} was superseded by a newer attempt (${by}) writing the same checkpoint location; this process is a leftover (zombie) and must stop writing`)
  }
}

export interface CommitterOptions {
  writerId: string
  attempt?: number
  chunkSize: number
  concurrency: number
  /** Files of a directory save of 1 to this many bytes share packs (see UploadOptions.packUpTo). */
  packFilesUpTo: number
  locks?: LockOptions
  /** Delay from the claim to the sweep of killed writers' leftovers. Default 60 s. */
  sweepAfterMs?: number
  repro?: boolean | Record<string, unknown>
  onProgress?: (p: CheckpointProgress) => void
  onWarning: (message: string) => void
  /** Manifests this writer commits are remembered here (retention after a commit reads them). */
  manifests?: ManifestCache
}

/**
 * Turns snapshots into commits for one writer: takes the writer's fencing epoch, then for each
 * snapshot stores the chunks not known to be stored intact, and writes the manifest that makes the
 * commit, all under a shared lock so garbage collection never deletes what the commit relies on.
 * It owns what the writer knows: its epoch, its last step and its ledger of verified chunks.
 */
export class Committer {
  readonly ledger = new ChunkLedger()
  /** Step of the newest checkpoint known (this writer's last, or the newest seen at open). */
  lastStep: number | undefined
  lastUpload: UploadStats | undefined
  private epoch: number | undefined
  /** Seq of this writer's last commit (0 before the first). */
  private lastSeq = 0
  private registering: Promise<void> | undefined
  private sweepTimer: NodeJS.Timeout | undefined
  /** The sweep once started (never rejects), so that stop() can wait for it. */
  private sweeping: Promise<void> | undefined
  private stopped = false

  constructor(
    private readonly storage: Storage,
    private readonly o: CommitterOptions,
  ) {}

  /**
   * Takes over this location as its newest writer: any writer that claimed it earlier fails its
   * next commit with FencedError.
   */
  async claim(): Promise<void> {
    this.registering ??= this.register()
    try {
      await this.registering
    } catch (e) {
      this.registering = undefined
      throw e
    }
  }

  private async register(): Promise<void> {
    // A writer hashes its chunks on worker threads, and the driver may write from threads of its
    // own: start them while the claim goes out, not on open (readers never need them), and not at
    // the first chunk, inside the job's loop.
    warmHashing()
    this.storage.prepareWrites?.()
    // The newest manifest has the highest manifest epoch; markers below it cannot matter.
    const newest = (await recentManifestNames(this.storage)).names.at(-1)
    const markers = await this.markersFrom(newest?.epoch ?? 0)
    const top = [...(newest ? [newest] : []), ...markers].reduce((mx, n) => Math.max(mx, n.epoch), 0)
    if (top >= Number.MAX_SAFE_INTEGER) {
      throw new TaskpointError(
        'EpochExhausted',
        `${this.storage.uri}: a stored manifest or writer marker claims epoch ${top}, the largest there can be, so no writer can ever take over; remove it (see \`taskpoint ls\`)`,
      )
    }
    const epoch = top + 1
    const key = writerMarkerKey(epoch, this.o.writerId)
    const marker = { writer: this.o.writerId, epoch, attempt: this.o.attempt, at: new Date().toISOString(), pid: process.pid }
    await this.storage.put(key, Buffer.from(JSON.stringify(marker)), { ifAbsent: true })
    this.epoch = epoch
    this.lastSeq = 0
    // Leftovers of killed writers: only ones far older than any live write could be. Later, not
    // now: the sweep walks the whole location, and the commit right after a restart should not
    // share the disk or the store with it. Unref'd: it never keeps a finished process alive.
    // A claim that was still in flight when stop() ran schedules nothing: the storage may be closed.
    if (this.storage.sweep && this.sweepTimer === undefined && !this.stopped) {
      this.sweepTimer = setTimeout(() => {
        this.sweeping = Promise.resolve(this.storage.sweep?.({ olderThanMs: Math.max(this.o.locks?.staleMs ?? 0, 10 * 60_000) })).then(
          () => {},
          (e: unknown) => this.o.onWarning(`sweeping leftovers failed: ${(e as Error).message}`),
        )
      }, this.o.sweepAfterMs ?? 60_000)
      this.sweepTimer.unref()
    }
  }

  /**
   * Cancels a sweep not started yet, keeps a claim still in flight from scheduling one, and waits
   * for one already running: the storage may be closed next and must not be used after that.
   */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.sweepTimer)
    await this.sweeping
  }

  /**
   * Writer markers of epoch `from` and above. Listed from that epoch's first key while keys sort
   * in numeric order (see sortsInKeyOrder), so the cost follows the writers since, not all of history.
   */
  private async markersFrom(from: number): Promise<{ epoch: number; writer: string }[]> {
    const out: { epoch: number; writer: string }[] = []
    const startAfter = from > 0 && sortsInKeyOrder({ epoch: from, seq: 0 }) ? writerMarkerKey(from, '').slice(0, -'.json'.length) : undefined
    for await (const o of this.storage.list(WRITER_DIR, startAfter === undefined ? {} : { startAfter })) {
      const m = parseWriterMarker(o.key)
      if (m && m.epoch >= from) out.push(m)
    }
    return out
  }

  /**
   * The manifests a commit must know about: those of this writer's epoch after its own last one
   * (their seqs must be exceeded) and every one of a later epoch (they fence it). Listed from this
   * writer's last key on (`listingStartFor`), so the cost does not grow with history; the whole
   * listing past the ordered bounds.
   */
  private async manifestsSince(): Promise<ManifestName[]> {
    const mine = { epoch: this.epoch!, seq: this.lastSeq }
    const startAfter = sortsInKeyOrder(mine) ? listingStartFor(mine) : undefined
    const out: ManifestName[] = []
    for await (const o of this.storage.list(MANIFEST_DIR, startAfter === undefined ? {} : { startAfter })) {
      const n = parseManifestKey(o.key)
      if (n && (n.epoch > mine.epoch || (n.epoch === mine.epoch && n.seq >= mine.seq))) out.push(n)
    }
    return out
  }

  /** Throws FencedError when a writer of a higher epoch (or the same epoch, higher id) exists. */
  private async checkFence(names: ManifestName[], markers: { epoch: number; writer: string }[]): Promise<void> {
    const mine = { epoch: this.epoch!, writer: this.o.writerId }
    const newer = [...markers, ...names].find((o) => o.epoch > mine.epoch || (o.epoch === mine.epoch && o.writer > mine.writer))
    if (newer) throw new FencedError(this.o.writerId, `writer ${newer.writer}, epoch ${newer.epoch}`)
  }

  /** Commits one snapshot; resolves once its manifest is stored. */
  async commit(snap: Snapshot): Promise<CheckpointInfo> {
    await this.claim()
    const total = snapshotSize(snap)
    const step = snap.options.step ?? (this.lastStep === undefined ? 0 : this.lastStep + 1)
    const { entries, arrays } = snap.kind === 'state' ? packState(snap.entries) : { entries: snap.entries, arrays: undefined }
    const upload = (known: { has(hash: string, size: number): boolean }) =>
      uploadChunks(this.storage, entries, {
        chunkSize: this.o.chunkSize,
        concurrency: this.o.concurrency,
        // Only directory saves have many files; a bytes or state checkpoint is one.
        packUpTo: snap.kind === 'files' ? this.o.packFilesUpTo : 0,
        known,
        // No pooled buffer: a write or save the caller awaits (background snapshots live in one).
        hashInPlaceUntilReady: snap.buffer === undefined,
        onProgress: (loaded, uploaded) => this.o.onProgress?.({ phase: 'upload', loaded, total, uploaded, step }),
      })
    for (let round = 0; ; round++) {
      const lock = await acquireShared(this.storage, this.o.writerId, this.o.locks)
      try {
        // Chunks this writer skips are protected by the manifests that reference them; under the
        // lock, no collector can start, so checking that those still exist is enough.
        for (const a of this.ledger.anchors()) if (!(await this.storage.head(a))) this.ledger.dropAnchor(a)
        const { files, packs, stats } = await upload(this.ledger)
        // All chunks are durable. Now the manifest: its existence is the commit.
        // Both listings at once: in a background commit each step waits for the training loop to yield.
        const [names, markers] = await Promise.all([this.manifestsSince(), this.markersFrom(this.epoch!)])
        await this.checkFence(names, markers)
        if (lock.lost !== undefined) {
          // Not refreshed in time (a paused process): a collector may have taken us for dead and
          // deleted chunks we rely on. Start over trusting nothing stored.
          this.ledger.clear()
          if (round < 2) continue
          throw new TaskpointError(
            'LockLost',
            `${this.storage.uri}: commit abandoned, its lock could not be kept (${lock.lost}); the checkpoint was not written. Check the connection to the store and that the process is not paused for minutes`,
          )
        }
        const m = await this.manifest(snap, names, step, files, packs, arrays)
        const key = manifestKey(m)
        const encoded = encodeManifest(m)
        const stored = readableOrThrow(key, encoded)
        await this.storage.put(key, encoded, { ifAbsent: true })
        if ((await lock.check()) !== undefined) {
          // The lock was lost while the manifest went out: a collector may be deleting chunks it
          // references. Once no collector runs (a new shared lock), everything is stored again.
          const again = await acquireShared(this.storage, this.o.writerId, this.o.locks)
          try {
            // Files are read from disk again: one that changed since gives other chunks than the
            // manifest names, one deleted, shrunk or replaced fails to read. Every chunk the manifest
            // needs must be there, or the commit is undone.
            let redone: { files: Manifest['files']; packs: Manifest['packs'] } | undefined
            let why = ''
            try {
              redone = await upload({ has: () => false })
            } catch (e) {
              why = (e as Error).message
            }
            const stored = new Set(redone ? chunksOf(redone).map((c) => `${c.hash}:${c.size}`) : [])
            const missing: string[] = []
            for (const c of chunksOf(m)) if (!stored.has(`${c.hash}:${c.size}`) && !(await this.storage.head(chunkKey(c.hash)))) missing.push(c.paths[0] ?? c.hash)
            if (missing.length > 0) {
              await this.storage.delete(key)
              throw new TaskpointError(
                'LockLost',
                `${this.storage.uri}: commit undone: its lock was lost while the manifest was written, and ${missing[0]}${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''} changed on disk before its chunks could be stored again${why ? ` (${why})` : ''}; save again`,
              )
            }
          } finally {
            await again.release()
          }
        }
        this.ledger.committed(chunksOf(m), key)
        this.o.manifests?.remember(key, stored)
        this.lastSeq = m.seq
        // Readers find this commit from here without listing the history (see recent.ts).
        await writeHint(this.storage, key).catch((e: unknown) =>
          this.o.onWarning(`writing the latest-checkpoint hint failed (readers list all checkpoints instead): ${(e as Error).message}`),
        )
        this.lastStep = step
        this.lastUpload = stats
        return infoOf(key, m)
      } finally {
        await lock.release().catch((e: unknown) => this.o.onWarning(`releasing the commit lock failed (it goes stale): ${(e as Error).message}`))
      }
    }
  }

  private async manifest(snap: Snapshot, names: ManifestName[], step: number, files: Manifest['files'], packs: Manifest['packs'], arrays: Manifest['arrays']): Promise<Manifest> {
    // Order is (epoch, seq, writer): seq only has to exceed the seqs of this writer's epoch.
    const seq = names.filter((n) => n.epoch === this.epoch).reduce((mx, n) => Math.max(mx, n.seq), this.lastSeq) + 1
    if (!Number.isSafeInteger(seq)) throw new TaskpointError('SeqExhausted', `${this.storage.uri}: a stored manifest has seq ${seq - 1}, the largest there can be; remove it`)
    const m: Manifest = {
      format: FORMAT_VERSION,
      kind: snap.kind,
      seq,
      epoch: this.epoch!,
      writer: this.o.writerId,
      step,
      createdAt: new Date().toISOString(),
      chunkSize: this.o.chunkSize,
      totalSize: snapshotSize(snap),
      metadata: snap.options.metadata ?? {},
      repro: this.o.repro === false ? {} : { ...(await reproInfo()), ...(typeof this.o.repro === 'object' ? this.o.repro : {}) },
      files,
    }
    if (packs && packs.length > 0) m.packs = packs
    if (this.o.attempt !== undefined) m.attempt = this.o.attempt
    if (snap.json !== undefined) m.json = snap.json
    if (arrays) m.arrays = arrays
    return m
  }
}

/**
 * The manifest as readers will decode it, checked before it is stored: one they would reject (a
 * value out of range from an option nothing checked) would make a write that resolved and that no
 * reader can read. Such a write fails instead, and nothing is committed.
 */
function readableOrThrow(key: string, encoded: Uint8Array): Manifest {
  try {
    return decodeManifest(key, encoded)
  } catch (e) {
    if (!(e instanceof CorruptCheckpointError)) throw e
    throw new ConfigError(`the checkpoint was not written: its manifest would not read back (${e.reason}); check the values passed to the Checkpointer and to this write`)
  }
}
