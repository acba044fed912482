import { realpathSync } from 'node:fs'
import path from 'node:path'

/**
 * Where a directory lies against a local store's own directory, links resolved: `same` (it is the
 * store), `inside` (within it), `holds` (the store is within it, at that relative '/'-separated
 * path), or undefined (apart, or no local store). A restore must not write into the store, and a
 * save must not copy it: both ask this.
 */
export type StorePlace = { same: true } | { inside: true } | { holds: string }

export function storePlace(dir: string, storeRoot: string | undefined): StorePlace | undefined {
  if (storeRoot === undefined) return undefined
  const [d, s] = [real(path.resolve(dir)), real(storeRoot)]
  const below = (rel: string): boolean => rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)
  const fromStore = path.relative(s, d)
  if (fromStore === '') return { same: true }
  if (below(fromStore)) return { inside: true }
  const fromDir = path.relative(d, s)
  return below(fromDir) ? { holds: fromDir.split(path.sep).join('/') } : undefined
}

/** A path with links resolved: the deepest existing directory, resolved, and the rest after it. */
function real(p: string): string {
  for (let d = p, rest = ''; ; rest = path.join(path.basename(d), rest), d = path.dirname(d)) {
    try {
      return path.join(realpathSync(d), rest)
    } catch {
      if (d === path.dirname(d)) return p
    }
  }
}
