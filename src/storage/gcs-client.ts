import { Storage as GcsClient, type StorageOptions as GcsClientOptions } from '@google-cloud/storage'
import type { RetryOptions } from './retry.js'

export interface GcsStorageOptions {
  /** Use this client as is. */
  client?: GcsClient
  /** Extra client options when taskpoint builds the client (projectId, keyFilename, apiEndpoint...). */
  clientOptions?: GcsClientOptions
  /** Objects larger than this use a resumable upload. Default 8 MiB. */
  resumableThreshold?: number
  /** Objects per list page. Default 1000. */
  pageSize?: number
  /**
   * A request that moves no bytes for this long (no response, or a body that stopped) is abandoned
   * as a transient fault and retried. Default 60000.
   */
  requestTimeoutMs?: number
  retry?: RetryOptions
  /** Whether the server enforces `ifGenerationMatch: 0`. Real GCS does. Default true. */
  conditionalCreate?: boolean
}

/** Builds a GCS client from options and the usual environment (STORAGE_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS...). */
export function makeGcsClient(options: GcsStorageOptions = {}): GcsClient {
  const emulator = process.env.STORAGE_EMULATOR_HOST
  const config: GcsClientOptions = {
    // taskpoint retries each operation itself; the SDK's own retries would multiply attempts.
    retryOptions: { autoRetry: false },
    timeout: options.requestTimeoutMs ?? 60_000,
    ...options.clientOptions,
  }
  if (emulator && !config.apiEndpoint) config.apiEndpoint = emulator.startsWith('http') ? emulator : `http://${emulator}`
  if (!config.projectId && process.env.GOOGLE_CLOUD_PROJECT) config.projectId = process.env.GOOGLE_CLOUD_PROJECT
  return new GcsClient(config)
}
