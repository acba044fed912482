import type { Readable } from 'node:stream'
import { SizeMismatchError, type StorageErrorDetails } from '../errors.js'

/**
 * Reads a download body to the end, reporting progress (for the stall timer) and writing straight
 * into the caller's buffer when there is one. A body larger than that buffer is a
 * `SizeMismatchError`, not a RangeError: the caller sized it from what it expected to be stored.
 */
export async function readBody(
  src: AsyncIterable<Uint8Array> | Readable,
  read: { into?: Uint8Array | undefined; progress: () => void; details: StorageErrorDetails; announced?: number | undefined },
): Promise<Uint8Array> {
  const into = read.into
  if (into && read.announced !== undefined && read.announced > into.byteLength) throw new SizeMismatchError(read.details, into.byteLength, read.announced)
  const parts: Uint8Array[] = []
  let n = 0
  for await (const p of src as AsyncIterable<Uint8Array>) {
    read.progress()
    if (into) {
      if (n + p.byteLength > into.byteLength) {
        ;(src as { destroy?: () => void }).destroy?.()
        throw new SizeMismatchError(read.details, into.byteLength, n + p.byteLength, `stored object has more than ${into.byteLength} bytes, the size of the 'into' buffer`)
      }
      into.set(p, n)
    } else parts.push(p)
    n += p.byteLength
  }
  return into ? into.subarray(0, n) : parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts)
}

/**
 * The 4 big-endian bytes of a 32-bit checksum, base64: how GCS writes a CRC32C (`crc32c` metadata,
 * x-goog-hash) and S3 a CRC32 (x-amz-checksum-crc32). Signed or unsigned input alike.
 */
export function checksumBase64(crc: number): string {
  const b = Buffer.alloc(4)
  b.writeInt32BE(crc | 0)
  return b.toString('base64')
}
