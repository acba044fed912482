import type { Readable } from 'node:stream'

/** Copies into the caller's buffer when one was given (the SDK always allocates its own). */
export function intoTarget(bytes: Uint8Array, into: Uint8Array | undefined): Uint8Array {
  if (!into) return bytes
  if (into.byteLength < bytes.byteLength) throw new RangeError(`'into' has ${into.byteLength} bytes, the object ${bytes.byteLength}`)
  into.set(bytes)
  return into.subarray(0, bytes.byteLength)
}

export async function collect(src: AsyncIterable<Uint8Array> | Readable): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const p of src as AsyncIterable<Uint8Array>) parts.push(p)
  return Buffer.concat(parts)
}
