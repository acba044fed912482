import type { CheckpointerOptions } from '../../src/checkpoint/checkpointer.js'
import { collectGarbage, prune } from '../../src/checkpoint/gc.js'
import { latest } from '../../src/checkpoint/retention.js'
import { openStorage } from '../../src/storage/resolve.js'
import { BullmqConfigError } from './location.js'

/**
 * What happens to a job's checkpoints after BullMQ recorded the job as completed:
 * - `'final'` (default): keep only the final checkpoint (the trained state, for inspection,
 *   `taskpoint restore`, or fine-tuning); earlier ones are pruned and their unshared chunks
 *   garbage-collected (chunks younger than `gc.minAgeMs` are left for a later pass).
 * - `'keep'`: leave everything (age-based expiry belongs to the bucket: an S3/GCS lifecycle rule
 *   on `<base>/<queue>/`).
 * - `'delete'`: remove everything under the job's location.
 * Failed jobs keep everything: a retry of a failed job (`job.retry()`) resumes from it.
 */
export type CompletedPolicy = 'final' | 'keep' | 'delete'

export async function cleanupCompleted(uri: string, policy: CompletedPolicy, co: CheckpointerOptions = {}): Promise<void> {
  if (policy === 'keep') return
  if (policy !== 'final' && policy !== 'delete') throw new BullmqConfigError(`onCompleted must be 'final', 'keep' or 'delete', got ${JSON.stringify(policy)}`)
  const storage = await openStorage(uri, co.storage)
  try {
    if (policy === 'final') {
      const r = await prune(storage, latest(1))
      if (r.deleted.length > 0) await collectGarbage(storage, { ...(co.gc?.minAgeMs !== undefined ? { minAgeMs: co.gc.minAgeMs } : {}) })
      return
    }
    const keys: string[] = []
    for await (const o of storage.list('')) keys.push(o.key)
    // Manifests first: a clean-up cut short leaves fewer checkpoints, never one with missing chunks.
    const manifests = keys.filter((k) => k.startsWith('manifests/'))
    if (manifests.length > 0) await storage.deleteMany(manifests)
    const rest = keys.filter((k) => !k.startsWith('manifests/'))
    if (rest.length > 0) await storage.deleteMany(rest)
  } finally {
    await storage.close()
  }
}
