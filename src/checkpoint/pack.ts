/**
 * Where packs of small files end. A pack ends after a file when a hash of the file's *path* falls
 * below `size / target` (so packs hold about `target` bytes on average), or when the next file
 * would not fit in a chunk. The decision for one file depends only on its own path and size,
 * never on the bytes or sizes of files before it: an unchanged tree packs into the same chunks
 * (deduplicated), and changing one file (even its size) changes its own pack and at most the next
 * one, never every pack after it, as cutting at fixed byte positions would.
 *
 * The hash is not a chunk id and guards nothing: crafted paths only make packs smaller or larger,
 * and packs never exceed the chunk size.
 */
export function endsPack(path: string, size: number, target: number): boolean {
  return pathHash(path) / 2 ** 32 < size / target
}

/** The average pack size for a chunk size: small enough that the size cap rarely cuts (e^-4). */
export function packTarget(chunkSize: number): number {
  return Math.max(1, Math.floor(chunkSize / 4))
}

/** FNV-1a over the path's UTF-16 code units, then murmur3's finaliser to spread similar paths. */
function pathHash(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}
