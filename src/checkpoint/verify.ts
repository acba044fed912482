import pLimit from 'p-limit'
import { CorruptCheckpointError, chunksOf, type Manifest } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { ManifestCache, fetchChunk, listManifestNames } from './reader.js'

export interface VerifyReport {
  id: string
  step?: number
  /** Undefined when intact; otherwise what is wrong (the manifest, or each bad chunk reference). */
  problems: string[]
  /** Distinct chunks the checkpoint references (its files' chunks and its packs). */
  chunks: number
}

export interface VerifyOptions {
  /** Every checkpoint instead of the newest one. Default false. */
  all?: boolean
  /** Only these checkpoint ids. */
  ids?: string[]
  concurrency?: number
  /** Called once per checkpoint before its chunks are read. */
  onStart?: (id: string, m: Manifest) => void
  onBytes?: (id: string, n: number) => void
}

/**
 * Re-reads every chunk of the newest checkpoint (or of each one) and reports what is damaged. The
 * newest means the newest *name*: a damaged newest manifest is reported, not passed over. A chunk
 * is checked once per (hash, size) pair, so a reference with the wrong size is never excused by a
 * correct one elsewhere.
 */
export async function verifyCheckpoints(storage: Storage, options: VerifyOptions = {}): Promise<VerifyReport[]> {
  const names = await listManifestNames(storage)
  const ids = options.ids ?? (options.all ? names.map((n) => n.key) : names.slice(-1).map((n) => n.key))
  const cache = new ManifestCache(storage)
  const checker = chunkChecker(storage, options.concurrency ?? 8)
  const reports: VerifyReport[] = []
  for (const id of ids) {
    let m: Manifest
    try {
      m = await cache.get(id)
    } catch (e) {
      if (!(e instanceof CorruptCheckpointError)) throw e
      reports.push({ id, problems: [`manifest: ${e.reason}`], chunks: 0 })
      continue
    }
    options.onStart?.(id, m)
    const problems = await checker.problemsOf(id, m, (n) => options.onBytes?.(id, n))
    reports.push({ id, step: m.step, problems, chunks: chunksOf(m).length })
  }
  return reports
}

/**
 * Reads chunks back and checks them, each (hash, size) pair once however many manifests cite it,
 * so a reference with the wrong size is never excused by a correct one elsewhere.
 */
export function chunkChecker(storage: Storage, concurrency: number) {
  const checked = new Map<string, Promise<string | undefined>>()
  const limit = pLimit(concurrency)
  return {
    /**
     * Every bad chunk (or pack) of a manifest, as `path: problem` naming the first file that needs
     * it (and how many more do); empty when all verify.
     */
    async problemsOf(id: string, m: Manifest, onBytes?: (n: number) => void): Promise<string[]> {
      const problems: string[] = []
      await Promise.all(
        chunksOf(m).map(async (c) => {
          const k = `${c.hash}:${c.size}`
          let p = checked.get(k)
          if (!p) {
            p = limit(() => fetchChunk(storage, id, c.hash, c.size)).then(
              () => undefined,
              (e: unknown) => {
                if (e instanceof CorruptCheckpointError) return e.reason
                throw e
              },
            )
            checked.set(k, p)
          }
          const problem = await p
          const who = c.paths.length > 1 ? `${c.paths[0]} (and ${c.paths.length - 1} more file(s) in the same pack)` : (c.paths[0] ?? 'an unused pack')
          if (problem) problems.push(`${who}: ${problem}`)
          onBytes?.(c.size)
        }),
      )
      return problems
    },
  }
}
