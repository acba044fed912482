import { ConfigError, TaskpointError } from '../errors.js'
import { CorruptCheckpointError, compareNames, parseManifestKey, type Manifest } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { type ManifestCache, infoOf, listManifestNames } from './reader.js'
import { recentManifestNames } from './recent.js'
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
 * reporting that there is nothing. `seen` tells whether any manifest was found at all.
 */
export async function resolveNewest<T>(
  storage: Storage,
  cache: ManifestCache,
  id: string | undefined,
  load: (m: Manifest, key: string) => Promise<T>,
  onSkip: (s: SkippedCheckpoint) => void,
): Promise<{ found: Resolved<T> | undefined; seen: boolean | undefined }> {
  if (id !== undefined) {
    if (typeof id !== 'string' || !parseManifestKey(id)) {
      throw new ConfigError(`not a checkpoint id: ${typeof id === 'string' ? JSON.stringify(id) : String(id)}; ids look like "manifests/…", as list() and latest() give them`)
    }
    let m: Manifest
    try {
      m = await cache.get(id)
    } catch (e) {
      // A pinned id that is not there was deleted (retention, prune) or never written: not damage.
      if (e instanceof CorruptCheckpointError && e.vanished)
        throw new TaskpointError('NoSuchCheckpoint', `no checkpoint ${id} at ${storage.uri}: deleted by retention or prune, or never written; list() shows what there is`)
      throw e
    }
    return { found: { value: await load(m, id), info: infoOf(id, m) }, seen: undefined }
  }
  const skipped: SkippedCheckpoint[] = []
  for (let round = 0; ; round++) {
    // From the hint on first (cost independent of history); only a walk that falls back past
    // every recent checkpoint needs the older ones, and lists them all.
    let { names, complete } = await recentManifestNames(storage)
    const seen = names.length
    let vanished = false
    skipped.length = 0
    for (let i = names.length - 1; ; i--) {
      if (i < 0) {
        if (complete) break
        const oldest = names[0]
        names = (await listManifestNames(storage)).filter((n) => oldest === undefined || compareNames(n, oldest) < 0)
        complete = true
        i = names.length
        continue
      }
      const key = names[i]!.key
      try {
        const m = await cache.get(key)
        const found = { value: await load(m, key), info: infoOf(key, m) }
        skipped.forEach(onSkip)
        return { found, seen: true }
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
      return { found: undefined, seen: seen + names.length > 0 }
    }
  }
}
