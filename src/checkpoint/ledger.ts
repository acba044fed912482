import type { ChunkRef } from '../format/manifest.js'

/**
 * The chunks this process knows to be stored intact, each with the manifest that keeps it alive
 * (its anchor). A writer skips uploading only chunks found here: ones it uploaded itself for a
 * commit that succeeded, or ones it read back and verified since. Anything else is uploaded again,
 * so damage to a stored chunk never spreads into later checkpoints, and a read that finds a chunk
 * damaged makes the next write repair it.
 *
 * Garbage collection deletes only chunks that no existing manifest references; so while an anchor
 * exists its chunks do too. A writer checks its anchors under its commit lock (see locks.ts) and
 * drops the chunks of any that vanished.
 */
export class ChunkLedger {
  private readonly chunks = new Map<string, { size: number; anchor: string }>()

  /** Whether a chunk of this hash and size is known to be stored intact. */
  has(hash: string, size: number): boolean {
    return this.chunks.get(hash)?.size === size
  }

  /** A chunk was read back and its hash checked, as part of the manifest `anchor`. */
  verified(hash: string, size: number, anchor: string): void {
    this.chunks.set(hash, { size, anchor })
  }

  /** A chunk was found missing or damaged: the next write uploads it again. */
  damaged(hash: string): void {
    this.chunks.delete(hash)
  }

  /**
   * A commit succeeded: its chunks (every one its manifest references: `chunksOf`) are stored,
   * anchored by its manifest; older knowledge is dropped.
   */
  committed(chunks: readonly ChunkRef[], anchor: string): void {
    this.chunks.clear()
    for (const c of chunks) this.chunks.set(c.hash, { size: c.size, anchor })
  }

  /** The manifests that keep known chunks alive. */
  anchors(): string[] {
    return [...new Set([...this.chunks.values()].map((c) => c.anchor))]
  }

  /** An anchor is gone: its chunks may be collected, so they are no longer known. */
  dropAnchor(anchor: string): void {
    for (const [h, c] of this.chunks) if (c.anchor === anchor) this.chunks.delete(h)
  }

  clear(): void {
    this.chunks.clear()
  }

  get size(): number {
    return this.chunks.size
  }
}
