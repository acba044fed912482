import pLimit from 'p-limit'
import { CHUNK_DIR, WRITER_DIR, chunkHashFromKey, type Manifest, type ManifestName } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { ManifestCache, infoOf, listManifestNames } from './reader.js'
import type { RetentionPolicy } from './retention.js'
import type { CheckpointInfo, SkippedCheckpoint } from './types.js'

export interface PruneResult {
  kept: CheckpointInfo[]
  deleted: CheckpointInfo[]
  skipped: SkippedCheckpoint[]
}

/**
 * Applies a retention policy: deletes the manifests it does not keep. The newest checkpoint is
 * always kept. Chunks are left to `collectGarbage`, which must run after this, never before.
 */
export async function prune(storage: Storage, policy: RetentionPolicy, cache = new ManifestCache(storage), dryRun = false): Promise<PruneResult> {
  const { infos, skipped } = await readInfos(storage, cache)
  const keep = policy(infos)
  const newest = infos.at(-1)
  if (newest) keep.add(newest.id)
  const deleted = infos.filter((i) => !keep.has(i.id))
  if (!dryRun && deleted.length > 0) {
    await storage.deleteMany(deleted.map((d) => d.id))
    for (const d of deleted) cache.forget(d.id)
  }
  return { kept: infos.filter((i) => keep.has(i.id)), deleted, skipped }
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
      const err = r.reason as Error & { code?: string }
      // Only damage is skipped; an outage must not make checkpoints look deletable.
      if (err.code !== 'CorruptCheckpoint') throw err
      skipped.push({ id: key, reason: err.message })
    }
  })
  return { infos, manifests, skipped, names }
}

export interface GcOptions {
  /**
   * Unreferenced chunks younger than this are left alone: they may belong to a save still in
   * flight in another process. Default 15 minutes.
   */
  minAgeMs?: number
  dryRun?: boolean
  now?: Date
}

export interface GcResult {
  deletedChunks: number
  freedBytes: number
  referencedChunks: number
  youngUnreferenced: number
}

/** Deletes chunks that no committed manifest references (and old fencing markers). */
export async function collectGarbage(storage: Storage, options: GcOptions = {}, cache = new ManifestCache(storage)): Promise<GcResult> {
  const minAge = options.minAgeMs ?? 15 * 60_000
  const now = (options.now ?? new Date()).getTime()
  const names = await listManifestNames(storage)
  const referenced = new Set<string>()
  for (const n of names) {
    let m: Manifest
    try {
      m = await cache.get(n.key)
    } catch (e) {
      // A damaged manifest cannot say which chunks it uses; deleting nothing because of it is safe,
      // but a damaged manifest is no checkpoint, so its chunks are not protected either.
      if ((e as { code?: string }).code === 'CorruptCheckpoint') continue
      throw e
    }
    for (const f of m.files) for (const c of f.chunks) referenced.add(c.hash)
  }
  const doomed: string[] = []
  let freed = 0
  let young = 0
  for await (const o of storage.list(CHUNK_DIR)) {
    const h = chunkHashFromKey(o.key)
    if (!h || referenced.has(h)) continue
    if (o.lastModified && now - o.lastModified.getTime() < minAge) {
      young++
      continue
    }
    doomed.push(o.key)
    freed += o.size
  }
  if (!options.dryRun && doomed.length > 0) await storage.deleteMany(doomed)
  // Fencing needs only the highest epoch's markers; older ones are history.
  const markers: { key: string; epoch: number }[] = []
  for await (const o of storage.list(WRITER_DIR)) {
    const m = /^writers\/(\d{8})-/.exec(o.key)
    if (m) markers.push({ key: o.key, epoch: Number(m[1]) })
  }
  const maxEpoch = Math.max(0, ...markers.map((m) => m.epoch))
  const oldMarkers = markers.filter((m) => m.epoch < maxEpoch - 1).map((m) => m.key)
  if (!options.dryRun && oldMarkers.length > 0) await storage.deleteMany(oldMarkers)
  return { deletedChunks: doomed.length, freedBytes: freed, referencedChunks: referenced.size, youngUnreferenced: young }
}
