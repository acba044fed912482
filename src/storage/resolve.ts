import { fileURLToPath } from 'node:url'
import { StorageConfigError } from '../errors.js'
import type { GcsStorageOptions } from './gcs.js'
import { LocalStorage, type LocalStorageOptions } from './local.js'
import type { RetryOptions } from './retry.js'
import type { S3StorageOptions } from './s3.js'
import type { Storage } from './types.js'

export interface OpenStorageOptions {
  local?: LocalStorageOptions
  s3?: S3StorageOptions
  gcs?: GcsStorageOptions
  /** Applied to whichever backend the URI selects, unless its own options set `retry`. */
  retry?: RetryOptions
}

export interface ParsedUri {
  backend: 'local' | 's3' | 'gcs'
  /** Bucket for s3/gcs; absolute directory for local. */
  bucket: string
  prefix: string
}

/** `/path`, `./path`, `file:///path` → local; `s3://bucket/prefix`; `gs://bucket/prefix`. */
export function parseStorageUri(uri: string): ParsedUri {
  if (typeof uri !== 'string' || uri.trim() === '') {
    throw new StorageConfigError({ backend: 'local' }, 'empty storage URI: use a path, file://…, s3://bucket/prefix or gs://bucket/prefix')
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(uri)
  if (!m) return { backend: 'local', bucket: uri, prefix: '' }
  const scheme = m[1]!.toLowerCase()
  const rest = m[2]!
  if (scheme === 'file') return { backend: 'local', bucket: fileURLToPath(uri), prefix: '' }
  if (scheme === 's3' || scheme === 'gs') {
    const backend = scheme === 's3' ? 's3' : 'gcs'
    const slash = rest.indexOf('/')
    const bucket = slash < 0 ? rest : rest.slice(0, slash)
    const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/+$/, '')
    if (!bucket) throw new StorageConfigError({ backend, key: uri }, `no bucket in URI (expected ${scheme}://bucket/prefix)`)
    return { backend, bucket, prefix }
  }
  throw new StorageConfigError({ backend: 'local', key: uri }, `unsupported URI scheme "${scheme}://": use a path, file://, s3:// or gs://`)
}

/**
 * Opens the storage a URI names. Credentials and endpoints come from options or the SDKs'
 * environment. The cloud SDKs are loaded only when their scheme is used (they cost ~100 ms each).
 */
export async function openStorage(uri: string, options: OpenStorageOptions = {}): Promise<Storage> {
  const p = parseStorageUri(uri)
  const retry = options.retry
  switch (p.backend) {
    case 'local':
      return new LocalStorage(p.bucket, { ...(retry ? { retry } : {}), ...options.local })
    case 's3': {
      const { S3Storage } = await import('./s3.js')
      return new S3Storage(p.bucket, p.prefix, { ...(retry ? { retry } : {}), ...options.s3 })
    }
    case 'gcs': {
      const { GcsStorage } = await import('./gcs.js')
      return new GcsStorage(p.bucket, p.prefix, { ...(retry ? { retry } : {}), ...options.gcs })
    }
  }
}
