import { fileURLToPath } from 'node:url'
import { StorageConfigError } from '../errors.js'
import type { StorageLocation } from './driver.js'
import { driverForScheme, knownSchemes, loadDriver, type DriverName, type DriverOptions } from './registry.js'
import type { RetryOptions } from './retry.js'
import type { Storage } from './types.js'

/**
 * Options of `openStorage`: one optional record per registered driver (`local`, `s3`, `gcs`, ...;
 * each driver documents its own), of which only the one the URI selects is used, plus `retry`.
 */
export type OpenStorageOptions = Partial<DriverOptions> & {
  /** Applied to whichever driver the URI selects, unless its own options set `retry`. */
  retry?: RetryOptions
}

/** A URI parsed by the registry. `backend` is the driver's registry name. */
export interface ParsedUri {
  backend: DriverName
  /** Bucket for object stores; absolute directory for local. */
  bucket: string
  prefix: string
}

/** What a storage URI may look like, from the registry: a path, or one of its schemes. */
function examples(): string {
  return `a path or ${knownSchemes()
    .map((scheme) => (scheme === 'file' ? 'file:///dir' : `${scheme}://bucket/prefix`))
    .join(', ')}`
}

/** `/path`, `./path`, `file:///path` → local; `<scheme>://bucket/prefix` → the driver registered for the scheme. */
export function parseStorageUri(uri: string): ParsedUri {
  if (typeof uri !== 'string' || uri.trim() === '') {
    throw new StorageConfigError({}, `empty storage URI: use ${examples()}`)
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/.exec(uri)
  if (!m) return { backend: 'local', bucket: uri, prefix: '' }
  const scheme = (m[1] ?? '').toLowerCase()
  const rest = m[2] ?? ''
  if (scheme === 'file') {
    try {
      return { backend: 'local', bucket: fileURLToPath(uri), prefix: '' }
    } catch (e) {
      // Node's reasons (a host, an encoded "/"), as a config error rather than a raw TypeError.
      throw new StorageConfigError(
        { backend: 'local', key: uri },
        `not a usable file URI (${(e as Error).message.replace(/^File URL /, '')}): use file:///absolute/dir or a plain path`,
      )
    }
  }
  const backend = driverForScheme(scheme)
  if (backend === undefined) {
    throw new StorageConfigError({ key: uri }, `unsupported URI scheme "${scheme}://": use ${examples()}`)
  }
  const slash = rest.indexOf('/')
  const bucket = slash < 0 ? rest : rest.slice(0, slash)
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/+$/, '')
  if (!bucket) throw new StorageConfigError({ backend, key: uri }, `no bucket in URI (expected ${scheme}://bucket/prefix)`)
  return { backend, bucket, prefix }
}

/**
 * Opens the storage a URI names. Credentials and endpoints come from options or the SDKs'
 * environment. A driver's module (and its cloud SDK, ~100 ms each) is loaded only when its scheme is used.
 */
export async function openStorage(uri: string, options: OpenStorageOptions = {}): Promise<Storage> {
  const parsed = parseStorageUri(uri)
  const driver = await loadDriver(parsed.backend)
  const location: StorageLocation = { driver: parsed.backend, bucket: parsed.bucket, prefix: parsed.prefix }
  const own = options[parsed.backend]
  return driver.open(location, { ...(options.retry ? { retry: options.retry } : {}), ...own })
}
