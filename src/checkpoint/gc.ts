import pLimit from 'p-limit'
import { randomBytes } from 'node:crypto'
import {
  CHUNK_DIR,
  MANIFEST_DIR,
  WRITER_DIR,
  CorruptCheckpointError,
  chunkHashFromKey,
  chunksOf,
  isManifestLike,
  parseManifestKey,
  parseWriterMarker,
  type Manifest,
  type ManifestName,
} from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { acquireExclusive, type LockOptions } from './locks.js'
import { ManifestCache, infoOf, listManifestNames } from './reader.js'
import type { RetentionPolicy } from './retention.js'
import type { CheckpointInfo, SkippedCheckpoint } from './types.js'
import { chunkChecker } from './verify.js'

export interface PruneOptions {
  dryRun?: boolean
  /**
   * A checkpoint the caller knows to be intact (a writer's own, just committed): it is the one
   * always kept. Without it, the newest checkpoint whose chunks all read back and verify is
   * found (newest first) and kept, so damaged newer checkpoints can never cause the last intact
   * one to be deleted.
   */
  intact?: string
  /** Also delete manifests that are damaged (reported in `deleted` of the result as `dropped`). Default false. */
  dropDamaged?: boolean
}

export interface PruneResult {
  kept: CheckpointInfo[]
  deleted: CheckpointInfo[]
  skipped: SkippedCheckpoint[]
  /** Damaged manifests deleted because `dropDamaged` was set. */
  dropped: SkippedCheckpoint[]
}

/**
 * Applies a retention policy: deletes the manifests it does not keep. The newest *intact*
 * checkpoint is always kept, whatever the policy says. Damaged manifests are never deleted unless
 * asked (`dropDamaged`). Chunks are left to `collectGarbage`.
 */
export async function prune(storage: Storage, policy: RetentionPolicy, cache = new ManifestCache(storage), options: PruneOptions = {}): Promise<PruneResult> {
  const { infos, skipped, manifests } = await readInfos(storage, cache)
  const keep = policy(infos)
  const anchor = options.intact ?? (await newestIntact(storage, infos, manifests))
  if (anchor !== undefined) keep.add(anchor)
  // Never delete what is newer than the newest intact one: it may be repaired (and is kept by any sane policy anyway).
  const newest = infos.at(-1)
  if (newest) keep.add(newest.id)
  if (anchor === undefined) for (const i of infos) keep.add(i.id) // nothing verifies: delete nothing
  const deleted = infos.filter((i) => !keep.has(i.id))
  const dropped = options.dropDamaged ? skipped.filter((s) => !s.vanished) : []
  if (!options.dryRun && deleted.length + dropped.length > 0) {
    await storage.deleteMany([...deleted.map((d) => d.id), ...dropped.map((d) => d.id)])
    for (const d of [...deleted, ...dropped]) cache.forget(d.id)
  }
  return { kept: infos.filter((i) => keep.has(i.id)), deleted, skipped, dropped }
}

/** The newest checkpoint whose every chunk reads back and verifies (reads them all; newest first). */
async function newestIntact(storage: Storage, infos: CheckpointInfo[], manifests: Map<string, Manifest>): Promise<string | undefined> {
  const checker = chunkChecker(storage, 8)
  for (let i = infos.length - 1; i >= 0; i--) {
    const id = infos[i]!.id
    if ((await checker.problemsOf(id, manifests.get(id)!)).length === 0) return id
  }
  return undefined
}

/** Every committed checkpoint whose manifest reads back intact, oldest first; the others in `skipped`. */
export async function readInfos(
  storage: Storage,
  cache = new ManifestCache(storage),
): Promise<{ infos: CheckpointInfo[]; manifests: Map<string, Manifest>; skipped: SkippedCheckpoint[]; names: ManifestName[] }> {
  const names = await listManifestNames(storage)
  const limit = pLimit(16)
  const settled = await Promise.allSettled(names.map((n) => limit(() => cache.get(n.key))))
  const infos: CheckpointInfo[] = []
  const manifests = new Map<string, Manifest>()
  const skipped: SkippedCheckpoint[] = []
  settled.forEach((r, i) => {
    const key = names[i]!.key
    if (r.status === 'fulfilled') {
      infos.push(infoOf(key, r.value))
      manifests.set(key, r.value)
    } else {
      // Only damage is skipped; an outage must not make checkpoints look deletable.
      if (!(r.reason instanceof CorruptCheckpointError)) throw r.reason
      const s: SkippedCheckpoint = { id: key, reason: r.reason.message }
      if (r.reason.vanished) s.vanished = true
      skipped.push(s)
    }
  })
  return { infos, manifests, skipped, names }
}

export interface GcOptions {
  /**
   * Unreferenced chunks younger than this are left alone. Safety does not depend on it (writers'
   * commits are protected by locks); it only keeps recently written, soon-to-be-reused chunks.
   * Default 15 minutes.
   */
  minAgeMs?: number
  dryRun?: boolean
  now?: Date
  /** Lock timing (see `LockOptions`). */
  locks?: LockOptions
  /** Identifies this collector in its lock. Default: random. */
  owner?: string
  /** Leftover temporary files of killed writers older than this are removed. Default 60 s. */
  sweepAgeMs?: number
}

export interface GcResult {
  deletedChunks: number
  freedBytes: number
  referencedChunks: number
  youngUnreferenced: number
  /** Set when nothing was deleted, with the reason (busy writers, damaged manifests...). */
  skipped?: string
  /** Damaged or unreadable manifests that stopped this run from deleting anything. */
  blockedBy: string[]
  /** Locks of dead processes removed. */
  staleLocks: number
  /** Leftovers of killed writers removed (temporary files, unfinished uploads). */
  swept: { count: number; bytes: number }
}

/**
 * Deletes chunks that no committed manifest references, old fencing markers, stale locks and
 * leftovers of killed writers. It runs under the exclusive lock, so no commit is in flight while it
 * decides, and it deletes nothing at all while any manifest cannot be read and classified for sure
 * (a damaged manifest cannot say which chunks it needs: drop it first with `prune --drop-damaged`).
 */
export async function collectGarbage(storage: Storage, options: GcOptions = {}, cache = new ManifestCache(storage)): Promise<GcResult> {
  const minAge = options.minAgeMs ?? 15 * 60_000
  const result: GcResult = { deletedChunks: 0, freedBytes: 0, referencedChunks: 0, youngUnreferenced: 0, blockedBy: [], staleLocks: 0, swept: { count: 0, bytes: 0 } }
  const owner = options.owner ?? `gc${randomBytes(5).toString('hex')}`
  const got = await acquireExclusive(storage, owner, options.locks)
  result.staleLocks = got.staleRemoved.length
  if (!got.lock) {
    result.skipped = `busy: ${got.busy}; nothing deleted, run again later`
    return result
  }
  try {
    const referenced = new Set<string>()
    const names: ManifestName[] = []
    for await (const o of storage.list(MANIFEST_DIR)) {
      const n = parseManifestKey(o.key)
      if (n) names.push(n)
      else if (isManifestLike(o.key)) result.blockedBy.push(`${o.key} (a name this version cannot read)`)
    }
    const limit = pLimit(16)
    await Promise.all(
      names.map((n) =>
        limit(async () => {
          let m: Manifest
          try {
            m = await cache.get(n.key)
          } catch (e) {
            if (!(e instanceof CorruptCheckpointError)) throw e // an outage: nothing is deleted
            if (!e.vanished) result.blockedBy.push(`${n.key} (${e.reason})`)
            return
          }
          // Files' own chunks and the packs their small files share alike.
          for (const c of chunksOf(m)) referenced.add(c.hash)
        }),
      ),
    )
    result.referencedChunks = referenced.size
    if (result.blockedBy.length > 0) {
      result.skipped = `${result.blockedBy.length} manifest(s) cannot be read, so which chunks they need is unknown; nothing deleted. Drop them with \`taskpoint prune --drop-damaged\` (or prune({ dropDamaged: true })) if they are beyond repair`
      return result
    }
    if (got.lock.lost) throw new Error(`garbage collection lost its lock (${got.lock.lost}); nothing deleted`)
    const now = (options.now ?? new Date()).getTime()
    const doomed: string[] = []
    for await (const o of storage.list(CHUNK_DIR)) {
      const h = chunkHashFromKey(o.key)
      if (!h || referenced.has(h)) continue
      if (o.lastModified && now - o.lastModified.getTime() < minAge) {
        result.youngUnreferenced++
        continue
      }
      doomed.push(o.key)
      result.freedBytes += o.size
    }
    result.deletedChunks = doomed.length
    // Last checks before deleting: this lock still holds, and no manifest appeared meanwhile (a
    // writer that was taken for dead and woke up); either way, delete nothing this time.
    if ((await got.lock.check()) !== undefined) throw new Error(`garbage collection lost its lock (${got.lock.lost}); nothing deleted`)
    const known = new Set(names.map((n) => n.key))
    const appeared = (await listManifestNames(storage)).filter((n) => !known.has(n.key))
    if (appeared.length > 0) {
      result.deletedChunks = 0
      result.freedBytes = 0
      result.skipped = `a checkpoint was committed while collecting (${appeared[0]!.key}); nothing deleted, run again`
      return result
    }
    // In small batches, each only while the lock is known to hold: a collector paused past the
    // stale time may have been taken for dead, and writers may since have stored these chunks again.
    for (let i = 0; !options.dryRun && i < doomed.length; i += 100) {
      if (got.lock.lost !== undefined) throw new Error(`garbage collection lost its lock (${got.lock.lost}) after deleting ${i} of ${doomed.length} chunks; run it again`)
      await storage.deleteMany(doomed.slice(i, i + 100))
    }
    // Fencing needs only the highest epoch's markers; older ones are history.
    const markers: { key: string; epoch: number }[] = []
    for await (const o of storage.list(WRITER_DIR)) {
      const m = parseWriterMarker(o.key)
      if (m) markers.push({ key: o.key, epoch: m.epoch })
    }
    const maxEpoch = markers.reduce((mx, m) => Math.max(mx, m.epoch), 0)
    const oldMarkers = markers.filter((m) => m.epoch < maxEpoch - 1).map((m) => m.key)
    if (!options.dryRun && oldMarkers.length > 0) await storage.deleteMany(oldMarkers)
    if (!options.dryRun && storage.sweep) {
      const sw = await storage.sweep({ olderThanMs: options.sweepAgeMs ?? 60_000 })
      result.swept = { count: sw.removed, bytes: sw.bytes }
    }
    return result
  } finally {
    await got.lock.release()
  }
}

export interface RetainOptions {
  /** The commit just made: the checkpoint known to be intact. */
  intact: string
  /** Identifies the collector's lock. */
  owner: string
  gc?: { minAgeMs?: number; enabled?: boolean }
  locks?: LockOptions
}

/**
 * Retention after a commit: prune by policy, then collect garbage if anything went. Problems never
 * fail the commit that already succeeded: they come back as a message (undefined when all went well).
 */
export async function retainAfterCommit(storage: Storage, policy: RetentionPolicy, cache: ManifestCache, o: RetainOptions): Promise<string | undefined> {
  try {
    const r = await prune(storage, policy, cache, { intact: o.intact })
    if (r.deleted.length === 0 || o.gc?.enabled === false) return undefined
    // Never wait for other writers here: if any is committing, this collection is skipped and the
    // next commit tries again.
    const g = await collectGarbage(storage, { ...(o.gc?.minAgeMs !== undefined ? { minAgeMs: o.gc.minAgeMs } : {}), locks: { ...o.locks, waitMs: 0 }, owner: o.owner }, cache)
    return g.skipped && g.blockedBy.length > 0 ? `garbage collection skipped: ${g.skipped}` : undefined
  } catch (e) {
    return `retention after commit failed (will retry after the next commit): ${(e as Error).message}`
  }
}
