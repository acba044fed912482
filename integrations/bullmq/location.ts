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
  const encoded = value.replace(/[^A-Za-z0-9_-]/gu, (c) => [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''))
  // A URL parser takes "%2E" and "%2E%2E" for "." and ".." (file:// locations are parsed so): job
  // "." would be the queue's own location, holding every job's checkpoints. A "~" never comes out of
  // the encoding above, so these stay apart from every other id.
  return encoded === '%2E' || encoded === '%2E%2E' ? `~${encoded}` : encoded
}

/**
 * Where a job's checkpoints live: `<base>/<queue>/<job id>`. Every worker derives the same place,
 * so whichever worker picks the job up next sees the checkpoints of the one before it.
 */
export function jobCheckpointUri(base: string, queueName: string, jobId: string | undefined): string {
  if (typeof base !== 'string' || base.trim() === '') throw new BullmqConfigError('checkpoint base must be a URI or path, e.g. s3://bucket/fleet or /var/lib/ckpt')
  return `${base.replace(/\/+$/, '')}/${segment('queue name', queueName)}/${segment('job id', jobId)}`
}
