import { Transform, type Readable } from 'node:stream'
import { SizeMismatchError, type StorageErrorDetails } from '../errors.js'

export async function collect(src: AsyncIterable<Uint8Array> | Readable): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const p of src as AsyncIterable<Uint8Array>) parts.push(p)
  return Buffer.concat(parts)
}

/**
 * Reads a download body to the end, reporting progress (for the stall timer) and writing straight
 * into the caller's buffer when there is one. A body larger than that buffer is a
 * `SizeMismatchError`, not a RangeError: the caller sized it from what it expected to be stored.
 */
export async function readBody(
  src: AsyncIterable<Uint8Array> | Readable,
  o: { into?: Uint8Array | undefined; progress: () => void; details: StorageErrorDetails; announced?: number | undefined },
): Promise<Uint8Array> {
  const into = o.into
  if (into && o.announced !== undefined && o.announced > into.byteLength) throw new SizeMismatchError(o.details, into.byteLength, o.announced)
  const parts: Uint8Array[] = []
  let n = 0
  for await (const p of src as AsyncIterable<Uint8Array>) {
    o.progress()
    if (into) {
      if (n + p.byteLength > into.byteLength) {
        ;(src as { destroy?: () => void }).destroy?.()
        throw new SizeMismatchError(o.details, into.byteLength, n + p.byteLength, `stored object has more than ${into.byteLength} bytes, the size of the 'into' buffer`)
      }
      into.set(p, n)
    } else parts.push(p)
    n += p.byteLength
  }
  return into ? into.subarray(0, n) : parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts)
}

/**
 * A pass-through for a stream handed to the caller that ends it with `error()` when no data comes
 * from the source for `stallMs` while the caller waits (nothing buffered for it); `onStall` then
 * releases the source. Time the caller spends not reading never counts as a stall. `onChunk` and
 * `atEnd` let the owner check what went through (length, checksum) before the stream ends.
 */
export function stallGuard(o: {
  stallMs: number
  error: () => Error
  onStall?: () => void
  onChunk?: (chunk: Buffer) => void
  atEnd?: () => Error | undefined
}): Transform {
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    clearTimeout(timer)
    timer = setTimeout(() => {
      if (t.destroyed || t.writableFinished) return
      if (t.readableLength > 0) return arm() // the caller, not the source, is behind
      o.onStall?.()
      t.destroy(o.error())
    }, o.stallMs)
    timer.unref()
  }
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      arm()
      o.onChunk?.(chunk)
      cb(null, chunk)
    },
    flush(cb) {
      clearTimeout(timer)
      cb(o.atEnd?.())
    },
  })
  t.once('close', () => clearTimeout(timer))
  arm()
  return t
}
