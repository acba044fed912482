import { TaskpointError } from '../errors.js'
import type { CheckpointKind } from '../format/manifest.js'
import type { OpenStorageOptions } from '../storage/resolve.js'
import type { ChunkCacheOptions } from './chunk-cache.js'
import type { LockOptions } from './locks.js'
import type { RetentionPolicy } from './retention.js'
import type { CheckpointInfo, CheckpointProgress } from './types.js'

export interface CheckpointerOptions {
  /** Which checkpoints survive a commit. Default: keep all. See `latest`, `everyNSteps`, `best`, `anyOf`. */
  keep?: RetentionPolicy
  /** Chunk size for content addressing and parallel upload. Default 4 MiB on local disk, 8 MiB on S3/GCS (the storage's `preferredChunkSize`). */
  chunkSize?: number
  /**
   * Files of a directory save of 1 to this many bytes are laid back to back into shared chunks
   * (packs) instead of one chunk each: 10,000 small files become a few objects. 0 turns packing
   * off. Default 1 MiB, at most `chunkSize`.
   */
  packFilesUpTo?: number
  /** Chunk transfers in flight. Default 8 on local disk, 16 on S3/GCS. */
  concurrency?: number
  /** Options for the storage the URI opens (ignored when a `Storage` is passed). */
  storage?: OpenStorageOptions
  /** Identifies this writer in manifests and fencing markers. Default: random. */
  writerId?: string
  /** Task attempt number, recorded in each manifest. */
  attempt?: number
  /**
   * Garbage collection after retention. `minAgeMs`: leave unreferenced chunks younger than this
   * (default 15 min). `sweepAfterMs`: how long after a writer takes over the location it removes
   * what killed writers left (temp files, incomplete multipart uploads, all older than 10 min);
   * default 60 s, so the first commits after a restart do not share the disk or the store with a
   * walk of the whole location. A writer closed before then leaves the sweep to the next one or
   * to `taskpoint gc`.
   */
  gc?: { minAgeMs?: number; enabled?: boolean; sweepAfterMs?: number }
  /** Timing of the locks that keep garbage collection off a commit in flight (see `LockOptions`). */
  locks?: LockOptions
  /** Extra reproducibility fields, or false to record none. Default: versions, platform, git commit, entry hash. */
  repro?: boolean | Record<string, unknown>
  /**
   * Keep verified copies of chunks read from the store on this machine, so reading an unchanged
   * checkpoint again downloads nothing. `true` for the defaults (directory `$TASKPOINT_CACHE_DIR`,
   * else `$XDG_CACHE_HOME/taskpoint/chunks`, else `~/.cache/taskpoint/chunks`; at most 10 GiB).
   * Default: off.
   */
  chunkCache?: boolean | ChunkCacheOptions
  onProgress?: (p: CheckpointProgress) => void
  /** Where skipped (corrupt) checkpoints and other non-fatal problems are reported. Default: console.warn. */
  onWarning?: (message: string) => void
}

export class CheckpointKindError extends TaskpointError {
  constructor(expected: string, got: CheckpointKind, id: string) {
    super('WrongKind', `checkpoint ${id} is a ${got} checkpoint, not ${expected}: use ${got === 'state' ? 'readState()' : got === 'files' ? 'restore(dir)' : 'read()'}`)
  }
}

export interface RestoreResult {
  info: CheckpointInfo
  files: string[]
}

export interface LoadedFiles {
  info: CheckpointInfo
  files: Map<string, Uint8Array>
  json: unknown
}
