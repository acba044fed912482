import type { CheckpointKind, DType } from '../format/manifest.js'

/** One committed checkpoint, as `list()` and `latest()` describe it. */
export interface CheckpointInfo {
  /** The manifest key: unique and stable. */
  id: string
  step: number
  seq: number
  epoch: number
  writer: string
  attempt?: number
  kind: CheckpointKind
  createdAt: Date
  /** Logical size: the sum of its files' sizes. */
  size: number
  files: number
  metadata: Record<string, unknown>
}

/** Options of one write. */
export interface WriteOptions {
  /** Training step (or epoch); defaults to one more than the last committed step. */
  step?: number
  /** JSON-serialisable; hyperparameters, metrics, anything to find or rank the checkpoint by. */
  metadata?: Record<string, unknown>
}

/** A named binary array for state checkpoints. */
export interface ArrayInput {
  data: ArrayBufferView
  dtype?: DType
  shape?: number[]
}

/** Tensors-and-JSON state: named arrays are stored as separate files, never concatenated in memory. */
export interface StateInput {
  arrays: Record<string, ArrayBufferView | ArrayInput>
  json?: unknown
}

export interface StateArray {
  data: Uint8Array
  dtype: DType
  shape?: number[]
}

export interface LoadedState {
  info: CheckpointInfo
  arrays: Record<string, StateArray>
  json: unknown
}

export interface CheckpointProgress {
  phase: 'upload' | 'download'
  /** Bytes processed (hashed and stored or skipped as already stored). */
  loaded: number
  total: number
  /** Bytes actually sent (new chunks only). */
  uploaded: number
  step?: number
}

/** A checkpoint that was passed over while reading, and why. */
export interface SkippedCheckpoint {
  id: string
  reason: string
  /** The manifest was deleted while being read (retention ran meanwhile), rather than damaged. */
  vanished?: boolean
}
