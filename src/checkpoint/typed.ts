import { TaskpointError } from '../errors.js'
import type { ArrayEntry, DType } from '../format/manifest.js'
import type { StateArray, StateData } from './types.js'

const VIEW: Record<DType, { new (buffer: ArrayBufferLike, byteOffset: number, length: number): StateData; readonly BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
  bytes: Uint8Array,
}

/**
 * One array of a state checkpoint as the caller wrote it: a typed array of its stored dtype
 * (`Float32Array` for float32; `Uint8Array` for bool and bytes) and its shape (`[length]` when
 * none was given). Arrays lie back to back in one file, so one that does not start on a multiple
 * of its element size is copied out; the others are views of the verified read buffer.
 */
export function stateArray(packed: Uint8Array, e: ArrayEntry): StateArray {
  const Ctor = VIEW[e.dtype]
  const width = Ctor.BYTES_PER_ELEMENT
  if (e.size % width !== 0) throw new TaskpointError('InvalidState', `array ${e.name} holds ${e.size} bytes, not a whole number of ${e.dtype} elements (${width} bytes each)`)
  const at = packed.byteOffset + e.offset
  const data = at % width === 0 ? new Ctor(packed.buffer, at, e.size / width) : new Ctor(packed.slice(e.offset, e.offset + e.size).buffer, 0, e.size / width)
  return { data, dtype: e.dtype, shape: e.shape ? [...e.shape] : [data.length] }
}
