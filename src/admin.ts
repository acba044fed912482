/**
 * `taskpoint/admin`: what the CLI's `ls`, `show`, `verify`, `prune` and `gc` do, as library calls.
 * All of it is safe beside live writers (see the locks in the README's format section).
 */
import { ManifestCache } from './checkpoint/reader.js'
import { readInfos } from './checkpoint/gc.js'
import { MANIFEST_DIR, type Manifest } from './format/manifest.js'
import type { Storage } from './storage/types.js'

export { collectGarbage, prune, type GcOptions, type GcResult, type PruneOptions, type PruneResult } from './checkpoint/gc.js'
export { verifyCheckpoints, type VerifyOptions, type VerifyReport } from './checkpoint/verify.js'
export type { LockOptions } from './checkpoint/locks.js'
export {
  FORMAT_VERSION,
  chunksOf,
  type Manifest,
  type FileEntry,
  type ChunkRef,
  type ChunkUse,
  type PackedRef,
  type ArrayEntry,
  type CheckpointKind,
  type DType,
} from './format/manifest.js'
export { readInfos } from './checkpoint/gc.js'

/**
 * Every committed checkpoint with its manifest, oldest first; damaged ones in `skipped`. An outage
 * throws: nothing is ever reported as damaged because the store could not be reached.
 */
export async function listCheckpoints(storage: Storage) {
  const { infos, manifests, skipped } = await readInfos(storage)
  return { checkpoints: infos, manifests, skipped }
}

/** One checkpoint's manifest, read and checked (a damaged one throws CorruptCheckpointError). */
export function inspectCheckpoint(storage: Storage, id: string): Promise<Manifest> {
  return new ManifestCache(storage).get(id)
}

/** Whether a stored key belongs to taskpoint's bookkeeping rather than being somebody else's data. */
export function isCheckpointKey(key: string): boolean {
  return key.startsWith(MANIFEST_DIR)
}
