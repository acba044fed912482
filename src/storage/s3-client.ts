import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3'
import type { RetryOptions } from './retry.js'

export interface S3StorageOptions {
  /** Use this client as is (its own retry settings are kept; ours still wrap each operation). */
  client?: S3Client
  /** Extra client config when taskpoint builds the client (region, endpoint, credentials...). */
  clientConfig?: S3ClientConfig
  /** Objects larger than this go up as multipart uploads. Default 8 MiB. */
  multipartThreshold?: number
  /** Multipart part size. Default 8 MiB (S3 minimum is 5 MiB). */
  partSize?: number
  /** Parts in flight per multipart upload. Default 4. */
  queueSize?: number
  /** Keys per ListObjectsV2 page. Default 1000 (the S3 maximum). */
  pageSize?: number
  /**
   * A request that moves no bytes for this long (no response, or a body that stopped) is abandoned
   * as a transient fault and retried. Default 60000.
   */
  requestTimeoutMs?: number
  retry?: RetryOptions
  /**
   * Whether the server enforces `If-None-Match: *`. Real S3 (since 2024), MinIO and R2 do; set
   * false for servers that silently ignore it. Default true.
   */
  conditionalCreate?: boolean
  /**
   * Sign every upload's body (SigV4 over its SHA-256, the SDK's default for in-memory bodies).
   * Default false: bodies of 1 MiB or more whose SHA-256 the caller did not pass (chunks pass it:
   * they are signed) go up as UNSIGNED-PAYLOAD with the SDK's CRC32 checksum, which S3 verifies,
   * so transit damage is still refused; the SHA-256 pass the signature needs would run over every
   * such byte on the calling thread. Set true when talking plain HTTP across a network you do not
   * trust (over HTTPS, TLS already protects the body).
   */
  signPayload?: boolean
  /**
   * Send uploads whose bytes are in shared memory (every chunk a checkpoint writes) from a worker
   * thread with its own client, so the request work (the SDK's middleware, and the socket writes,
   * or TLS, of every byte) stays off the thread that runs the training loop. Default true. Used
   * only where taskpoint builds the client from options that can be handed to a thread as they
   * are: no `client` passed in, and no functions or class instances in `clientConfig` (a
   * credentials provider function, a custom request handler), and not once middleware is added to
   * the storage's `client`; other uploads, and every other request, go from the calling thread.
   * The thread sees the environment as it was when it started, and none of the process's
   * `--require` preloads (a proxy agent, a tracer): set false where those must see every upload.
   */
  uploadThread?: boolean
}

/** Builds an S3 client from options and the SDK's usual environment (AWS_REGION, AWS_ENDPOINT_URL, ...). */
export function makeS3Client(options: S3StorageOptions = {}): S3Client {
  return newS3Client(s3ClientConfig(options))
}

/** The config makeS3Client builds a client from. */
export function s3ClientConfig(options: S3StorageOptions = {}): S3ClientConfig {
  const env = process.env
  const endpoint = options.clientConfig?.endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL
  const pathStyleEnv = env.AWS_S3_FORCE_PATH_STYLE ?? env.TASKPOINT_S3_FORCE_PATH_STYLE
  const config: S3ClientConfig = {
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    // Self-hosted S3 (MinIO, test servers) rarely has wildcard DNS: path style unless told otherwise.
    forcePathStyle: pathStyleEnv !== undefined ? pathStyleEnv === 'true' || pathStyleEnv === '1' : endpoint !== undefined,
    // taskpoint retries each operation itself; a second retry layer inside the SDK would multiply attempts.
    maxAttempts: 1,
    requestHandler: {
      connectionTimeout: 10_000,
      requestTimeout: options.requestTimeoutMs ?? 60_000,
      throwOnRequestTimeout: true,
    },
    ...options.clientConfig,
  }
  if (endpoint !== undefined) config.endpoint = endpoint
  return config
}

/** A client from a config built by s3ClientConfig, without the SDK's Node-version warning. */
export function newS3Client(config: S3ClientConfig): S3Client {
  const env = process.env
  // The SDK's 8-line "Node 20 support ends" warning on every run is noise to our users: set the
  // SDK's own switch for the client we build (it warns at most once per process), then undo it so
  // child processes and the user's own clients see their environment unchanged.
  const quiet = env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  try {
    return new S3Client(config)
  } finally {
    if (quiet === undefined) delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
  }
}
