import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../../src/errors.js'

/** A bad option or job handed to the BullMQ integration (a clear message, never a raw stack). */
export class BullmqConfigError extends ConfigError {
  constructor(message: string) {
    super(message, 'BullmqConfig')
  }
}

/**
 * One path segment from a queue name or job id. Job ids come from producers (custom ids are
 * allowed), so anything outside a small safe alphabet is percent-encoded: a job id can never
 * reach another job's checkpoints (`../other`), and two different ids never share a location.
 */
export function segment(what: string, value: string | undefined): string {
  if (typeof value !== 'string' || value === '') throw new BullmqConfigError(`${what} must be a non-empty string, got ${JSON.stringify(value)}`)
  if (value.length > 200) throw new BullmqConfigError(`${what} is ${value.length} characters long; at most 200 are allowed in a checkpoint location`)
  return value.replace(/[^A-Za-z0-9_-]/gu, (c) => [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''))
}

/**
 * Where a job's checkpoints live: `<base>/<queue>/<job id>`. Every worker derives the same place,
 * so whichever worker picks the job up next sees the checkpoints of the one before it.
 */
export function jobCheckpointUri(base: string, queueName: string, jobId: string | undefined): string {
  if (typeof base !== 'string' || base.trim() === '') throw new BullmqConfigError('checkpoint base must be a URI or path, e.g. s3://bucket/fleet or /var/lib/ckpt')
  const tail = `${segment('queue name', queueName)}/${segment('job id', jobId)}`
  // A file:// location is percent-decoded when opened: "%2E" would become a dot segment (job "."
  // at the queue's own directory) and "%2F" a refused path. Its segments are joined to the path
  // instead, and kept as encoded, as they are on a plain path and in object keys.
  if (/^file:\/\//i.test(base)) {
    let dir: string
    try {
      dir = fileURLToPath(base)
    } catch (e) {
      throw new BullmqConfigError(`checkpoint base ${base} is not a usable file URI (${(e as Error).message}): use file:///absolute/dir or a plain path`)
    }
    return path.join(dir, tail)
  }
  return `${base.replace(/\/+$/, '')}/${tail}`
}
