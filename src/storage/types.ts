import type { Readable } from 'node:stream'
import type { StorageBackend } from '../errors.js'

/** What a listing or a `head` tells about one stored object. Keys are relative to the storage root. */
export interface ObjectInfo {
  key: string
  size: number
  /** S3 ETag, GCS etag, or a size+mtime tag on local disk. */
  etag?: string
  /** GCS object generation (the value `ifGenerationMatch` compares). */
  generation?: string
  lastModified?: Date
}

export interface TransferProgress {
  key: string
  /** Bytes moved so far. */
  loaded: number
  /** Total bytes, when known up front. */
  total?: number
}

/**
 * A body that can be read more than once, so a failed upload can be retried from the start
 * without holding the whole object in memory (a file on disk, a generator over tensors...).
 */
export interface BodySource {
  /** Size in bytes if known; lets a driver choose single-request vs multipart up front. */
  size?: number
  open(): AsyncIterable<Uint8Array> | Readable
}

export type Body = Uint8Array | BodySource

export interface PutOptions {
  /**
   * Create only if no object exists at the key (S3 `If-None-Match: *`, GCS `ifGenerationMatch: 0`,
   * local `link(2)`). Fails with `AlreadyExistsError` otherwise. Default: false (overwrite).
   */
  ifAbsent?: boolean
  /** Called as bytes go out; at least once at the end. */
  onProgress?: (p: TransferProgress) => void
  signal?: AbortSignal
  /**
   * Part of a batch: the put may return before its directory entry is durable, and `sync()` makes
   * the whole batch durable at once (local disk: one fsync per directory instead of one per file).
   * Cloud puts are durable when they return either way. Default false.
   */
  batch?: boolean
  /**
   * The object need not survive a power loss: a lock (a dead holder's lock is only litter) or a
   * hint that readers verify. Local disk skips its fsyncs (file and directories); the put is still
   * atomic, so readers see the old object or the new one. Cloud puts are durable either way.
   * Default false.
   */
  ephemeral?: boolean
  /**
   * The SHA-256 of the body (64 hex digits), when the caller has it already (chunk ids are
   * content hashes). A driver may send it for the server to verify instead of hashing the body
   * again: S3 gets it as the payload hash of the signature and as x-amz-checksum-sha256, so a
   * body damaged in transit is refused and the SDK hashes nothing on the calling thread. Wrong
   * digests fail the put. Ignored where a driver has no use for it.
   */
  sha256?: string
  /**
   * The CRC32 (IEEE, as zlib computes it) of the body, when the caller has it already (chunks are
   * hashed on worker threads, which compute it alongside). A driver whose store checks uploads by
   * CRC32 (S3: x-amz-checksum-crc32) sends it instead of computing it on the calling thread; a
   * wrong value fails the put there. Ignored by other drivers, and where `sha256` is given.
   */
  crc32?: number
}

export interface GetOptions {
  /** Byte range; `length` defaults to the rest of the object. */
  range?: { offset: number; length?: number }
  /**
   * Read into this buffer instead of a new one; the result is a view of it. Saves an allocation and
   * a copy when the caller assembles many objects into one buffer. An object (or range) larger
   * than the buffer fails with `SizeMismatchError` (code `SizeMismatch`), never a RangeError.
   */
  into?: Uint8Array
  signal?: AbortSignal
}

export interface ListOptions {
  /**
   * Only keys that sort strictly after this one (byte order, like S3 `StartAfter`; GCS
   * `startOffset`; local disk filters its sorted directory listing before touching any file).
   * Lets a reader that knows a recent key list only what came after it. Default: from the start.
   */
  startAfter?: string
}

export interface SweepOptions {
  /**
   * Only leftovers older than this are removed, so a writer still at work is left alone (its temp
   * file's mtime moves as it writes; a multipart upload's age counts from its start). Default 1 hour.
   */
  olderThanMs?: number
}

/** What a sweep removed. */
export interface SweepResult {
  /** Temp files (local) or incomplete multipart uploads (S3) removed. */
  removed: number
  /** Bytes freed, as far as the backend tells (S3 part sizes are not listed: 0 there). */
  bytes: number
  /** What was removed: temp file keys relative to the root, or `key#uploadId`. */
  items: string[]
}

/** What a driver declares about itself, so core code asks instead of branching on a backend name. */
export interface StorageCapabilities {
  /** The backend enforces `ifAbsent` atomically (true for local disk, real S3 and real GCS). */
  conditionalCreate: boolean
  /**
   * How many object transfers to keep in flight by default (the Checkpointer's `concurrency`):
   * enough to hide per-request latency on object stores, fewer on a local disk that seeks.
   */
  preferredConcurrency: number
  /**
   * The chunk size the Checkpointer uses by default here (its `chunkSize`; also the deduplication
   * granularity). Default 4 MiB. Object stores take 8 MiB: every chunk is one request, and per
   * request the servers spend CPU (and bill) whatever its size; halving the requests brought a
   * 256 MiB save on the S3 test server from 0.74× to 0.86× of the fastest raw parallel PUTs.
   */
  preferredChunkSize?: number
  /** Puts take a CRC32 the caller computed (PutOptions.crc32) as their upload check. Default false. */
  takesCrc32?: boolean
  /**
   * The directory the objects live in, where they are files on this machine (the local driver): a
   * restore must neither write into it nor replace a directory that holds it.
   */
  localRoot?: string
}

/**
 * One interface over every driver (local disk, S3, GCS, ...; see registry.ts). Every method is retried on transient faults
 * (per operation, with backoff) and fails at once on permanent ones with a typed `StorageError`.
 * Keys are `/`-separated, relative to the root the storage was opened on, and validated.
 */
export interface Storage {
  /** The driver's registry name ('local', 's3', 'gcs', ...). */
  readonly backend: StorageBackend
  /** The URI this storage was opened on, e.g. `s3://bucket/runs/42`. */
  readonly uri: string
  readonly capabilities: StorageCapabilities
  put(key: string, body: Body, options?: PutOptions): Promise<ObjectInfo>
  /** Whole object (or a range) into memory. */
  get(key: string, options?: GetOptions): Promise<Uint8Array>
  /** `undefined` when the object does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>
  /** Every object whose key starts with `prefix` (and sorts after `startAfter`), in ascending key order, page by page. */
  list(prefix?: string, options?: ListOptions): AsyncIterable<ObjectInfo>
  /** Idempotent: deleting a missing object succeeds. */
  delete(key: string): Promise<void>
  deleteMany(keys: readonly string[]): Promise<void>
  /** Makes every `batch` put so far durable. A no-op where puts are durable on return. */
  sync(): Promise<void>
  /**
   * Removes what killed writers left behind: local temp files, S3 incomplete multipart uploads
   * under the prefix. GCS has nothing to sweep (a resumable upload that is never finalised is
   * invisible and expires on its own after a week; simple uploads are atomic).
   */
  sweep?(options?: SweepOptions): Promise<SweepResult>
  /**
   * Starts what this driver's writes run on (the local file threads, the S3 upload thread) ahead of
   * the first write: a writer calls it when it claims the location, so that a job's first
   * checkpoint, inside its training loop, does not pay for starting them. Best effort: it never
   * throws, and writes start them anyway when it was not called.
   */
  prepareWrites?(): void
  /** Releases sockets; the storage must not be used afterwards. */
  close(): Promise<void>
}
