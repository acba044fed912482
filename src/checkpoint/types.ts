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

/** The typed arrays a state checkpoint gives back, by dtype (bool and bytes: Uint8Array). */
export type StateData = Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array

/** One array of a state checkpoint, as `readState()` returns it. */
export interface StateArray {
  /** A typed array of the stored dtype, e.g. Float32Array for float32 (see `StateData`). */
  data: StateData
  dtype: DType
  /** As written; `[length]` when the array was written without one. */
  shape: number[]
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
