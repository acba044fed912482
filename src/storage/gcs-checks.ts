import { checksumBase64 } from './bytes.js'
import { crc32cUpdate } from './crc32c.js'
import { TransientStorageError, type StorageErrorDetails } from '../errors.js'
import type { ObjectInfo } from './types.js'

// What a GCS download is checked against: the object's metadata and the x-goog-hash header. The
// SDK's own validation is off (see GcsStorage.download), so these checks are the only ones.

export function infoOf(key: string, md: { size?: string | number; etag?: string; generation?: string | number; updated?: string }): ObjectInfo {
  const info: ObjectInfo = { key, size: Number(md.size ?? 0) }
  if (md.etag) info.etag = md.etag
  if (md.generation !== undefined) info.generation = String(md.generation)
  if (md.updated) info.lastModified = new Date(md.updated)
  return info
}

/** Metadata that arrived cut short is a string (or lacks the object's name): transient, never an object of size 0. */
export function checkMetadata(
  md: unknown,
  d: StorageErrorDetails,
): asserts md is { name: string; size?: string | number; generation?: string | number; crc32c?: string; metadata?: unknown } {
  if (typeof md !== 'object' || md === null || typeof (md as { name?: unknown }).name !== 'string') {
    throw new TransientStorageError(d, 'unreadable object metadata (truncated or garbled in transit); retried')
  }
}

export function hashFromHeader(h: string | string[] | undefined, kind: 'crc32c' | 'md5'): string | undefined {
  for (const part of (Array.isArray(h) ? h.join(',') : (h ?? '')).split(',')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === kind) return part.slice(i + 1).trim()
  }
  return undefined
}

/** The crc32c (base64, as GCS writes it) of `bytes`. */
export function crc32cOf(bytes: Uint8Array): string {
  return checksumBase64(crc32cUpdate(0, bytes))
}
