import { StorageConfigError } from '../errors.js'
import { joinKey, validateKey, validatePrefix } from './keys.js'

/**
 * The key arithmetic every bucket-style driver needs: a root prefix inside a bucket, full object
 * names from validated keys, listing prefixes and the keys back from listed names, and the
 * `scheme://bucket/prefix/key` form shown in errors.
 */
export class ObjectRoot {
  /** Root prefix without leading or trailing '/'; '' for the bucket's top. */
  readonly prefix: string
  /** e.g. `s3://bucket/runs/42`. */
  readonly uri: string

  constructor(
    readonly backend: string,
    scheme: string,
    readonly bucket: string,
    prefix: string,
    bucketRule: { pattern: RegExp; hint: string },
  ) {
    if (!bucketRule.pattern.test(bucket)) {
      throw new StorageConfigError({ backend, key: bucket }, `invalid bucket name in URI (expected ${scheme}://bucket/prefix${bucketRule.hint})`)
    }
    this.prefix = prefix.replace(/^\/+|\/+$/g, '')
    if (this.prefix) validateKey(this.prefix, backend, 'open')
    this.uri = `${scheme}://${bucket}${this.prefix ? `/${this.prefix}` : ''}`
  }

  /** The object name of a key, after validating it for `op`. */
  full(key: string, op: string): string {
    return joinKey(this.prefix, validateKey(key, this.backend, op))
  }

  /** How a key is shown in errors: the whole URI. */
  where(key: string | undefined): string {
    return `${this.uri}/${key ?? ''}`
  }

  /** The object-name prefix to list for a key prefix (validated). */
  listPrefix(prefix: string): string {
    validatePrefix(prefix, this.backend)
    return this.prefix ? `${this.prefix}/${prefix}` : prefix
  }

  /** The key of a listed object name under the root. */
  keyOf(name: string): string {
    return name.slice(this.prefix ? this.prefix.length + 1 : 0)
  }
}
