import { CorruptCheckpointError, type Manifest, type ManifestName } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { type ManifestCache, infoOf, listManifestNames } from './reader.js'
import type { CheckpointInfo, SkippedCheckpoint } from './types.js'

export interface Resolved<T> {
  value: T
  info: CheckpointInfo
}

/**
 * Finds the newest checkpoint that `load` can read back completely, falling back past damaged ones
 * (each passed to `onSkip`). `id` pins one checkpoint (no fallback). Retention in another process
 * may delete what this walk was about to read: when a checkpoint vanished underneath, the walk
 * starts again from a fresh listing instead of falling back to older (also deleted) ones and
 * reporting that there is nothing.
 */
export async function resolveNewest<T>(
  storage: Storage,
  cache: ManifestCache,
  id: string | undefined,
  load: (m: Manifest, key: string) => Promise<T>,
  onSkip: (s: SkippedCheckpoint) => void,
): Promise<{ found: Resolved<T> | undefined; names: ManifestName[] | undefined }> {
  if (id !== undefined) {
    const m = await cache.get(id)
    return { found: { value: await load(m, id), info: infoOf(id, m) }, names: undefined }
  }
  const skipped: SkippedCheckpoint[] = []
  for (let round = 0; ; round++) {
    const names = await listManifestNames(storage)
    let vanished = false
    skipped.length = 0
    for (let i = names.length - 1; i >= 0; i--) {
      const key = names[i]!.key
      try {
        const m = await cache.get(key)
        const found = { value: await load(m, key), info: infoOf(key, m) }
        skipped.forEach(onSkip)
        return { found, names }
      } catch (e) {
        if (!(e instanceof CorruptCheckpointError)) throw e
        if (e.vanished || !(await storage.head(key))) {
          vanished = true
          continue
        }
        skipped.push({ id: key, reason: e.message })
      }
    }
    if (!vanished || round >= 4) {
      skipped.forEach(onSkip)
      return { found: undefined, names }
    }
  }
}
