export * from './errors.js'
export * from './storage/index.js'
export * from './checkpoint/index.js'
export { CorruptCheckpointError, FORMAT_VERSION, type Manifest, type FileEntry, type ChunkRef, type DType, type CheckpointKind } from './format/manifest.js'
