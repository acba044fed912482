import type { RetryOptions } from './retry.js'
import type { Storage } from './types.js'

/** Where a storage URI points, once the registry has chosen the driver. */
export interface StorageLocation {
  /** Registry name of the driver: 'local', 's3', 'gcs', ... */
  driver: string
  /** Bucket (or container) for object stores; the absolute root directory for local disk. */
  bucket: string
  /** Key prefix inside the bucket, without leading or trailing '/'; '' for local disk. */
  prefix: string
}

/** What every driver's options have in common: `openStorage({ retry })` lands here unless the driver's own options set it. */
export interface DriverOptionsBase {
  retry?: RetryOptions
}

/**
 * One storage driver: a name and a constructor from a parsed location. The driver's module is
 * imported only when a URI names one of its schemes (see registry.ts), so a cloud SDK costs
 * nothing until it is used. Capabilities are declared by the Storage it returns.
 */
export interface StorageDriver<O extends DriverOptionsBase = DriverOptionsBase> {
  readonly name: string
  open(location: StorageLocation, options: O): Storage
}

/** Types a driver definition (unstorage's `defineDriver`): `export const driver = defineDriver({ ... })`. */
export function defineDriver<O extends DriverOptionsBase>(driver: StorageDriver<O>): StorageDriver<O> {
  return driver
}
