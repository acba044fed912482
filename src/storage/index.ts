// `taskpoint/storage`: the Storage interface, the local driver, URI resolution, the driver registry
// types, key rules, retries and every storage error. The S3 and GCS drivers are not re-exported
// here so that importing taskpoint does not load the cloud SDKs; `openStorage` loads them on
// demand, and `taskpoint/s3`, `taskpoint/gcs` export the classes.
export type { Body, BodySource, GetOptions, ObjectInfo, PutOptions, Storage, StorageCapabilities, SweepOptions, SweepResult, TransferProgress } from './types.js'
export { LocalStorage, type LocalStorageOptions } from './local.js'
export type { S3StorageOptions } from './s3.js'
export type { GcsStorageOptions } from './gcs.js'
export { openStorage, parseStorageUri, type OpenStorageOptions, type ParsedUri } from './resolve.js'
export { defineDriver, type DriverOptionsBase, type StorageDriver, type StorageLocation } from './driver.js'
export type { DriverName, DriverOptions } from './registry.js'
export { validateKey } from './keys.js'
export { DEFAULT_RETRY, type RetryOptions } from './retry.js'
export {
  AccessDeniedError,
  AlreadyExistsError,
  BucketNotFoundError,
  InvalidKeyError,
  NoSpaceError,
  NotFoundError,
  SizeMismatchError,
  StorageConfigError,
  StorageError,
  TransientStorageError,
  isAlreadyExists,
  isNotFound,
  isTransient,
  type StorageBackend,
  type StorageErrorCode,
  type StorageErrorDetails,
} from '../errors.js'
