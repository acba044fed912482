import { isNotFound } from '../errors.js'
import { MANIFEST_DIR, compareNames, listingStartFor, parseManifestKey, sortsInKeyOrder, type ManifestName } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { listManifestNames } from './reader.js'

/**
 * Finding the newest checkpoint without listing the whole history.
 *
 * After each commit the writer stores a *hint*, `hints/latest.json`, naming its manifest. A hint is
 * never trusted on its own: it only says where to start listing. A reader takes the hinted key if
 * it is a well-formed manifest name within the ordered bounds (`sortsInKeyOrder`), lists
 * `manifests/` from the hinted key on (`listingStartFor`), and uses the listing only if the hinted
 * manifest is in it (it sorts after its own start key, so it is listed if it exists). Every
 * manifest newer by (epoch, seq, writer), in either key layout, sorts after that start byte for
 * byte, so the listing sees all of them whatever the hint says: a stale hint only makes the
 * listing longer, and a hint that is missing, garbled, names a manifest that does not exist or
 * lies past the bounds falls back to the full listing.
 * The result therefore always ends with the same newest manifest as the full listing would.
 */
export const HINT_KEY = 'hints/latest.json'

/** Bumped if the hint's shape changes; an unknown version is ignored like a garbled hint. */
const HINT_VERSION = 1
const MAX_HINT_BYTES = 4096

export interface RecentNames {
  /** Manifests from the hinted one (or the first) to the newest, oldest first. */
  names: ManifestName[]
  /** True when `names` is every manifest stored (full listing); false when it starts at the hint. */
  complete: boolean
}

/** The hinted manifest name, or undefined when the hint is absent or cannot be used. */
export async function readHint(storage: Storage): Promise<ManifestName | undefined> {
  let bytes: Uint8Array
  try {
    // Never more than a hint can be: a forged huge object costs one small read, not a download.
    bytes = await storage.get(HINT_KEY, { range: { offset: 0, length: MAX_HINT_BYTES + 1 } })
  } catch (e) {
    // Missing is the normal case for a location no writer of this version has committed to.
    if (isNotFound(e)) return undefined
    throw e
  }
  if (bytes.byteLength > MAX_HINT_BYTES) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch {
    return undefined
  }
  const h = parsed as { v?: unknown; key?: unknown } | null
  if (!h || typeof h !== 'object' || h.v !== HINT_VERSION || typeof h.key !== 'string') return undefined
  const name = parseManifestKey(h.key)
  return name && sortsInKeyOrder(name) ? name : undefined
}

/**
 * Names the newest manifest for the next reader. Best effort and unsynced: a hint lost or torn by
 * a crash only sends readers to the full listing, and concurrent writers may leave an older one.
 */
export async function writeHint(storage: Storage, key: string): Promise<void> {
  await storage.put(HINT_KEY, Buffer.from(JSON.stringify({ v: HINT_VERSION, key })), { ephemeral: true })
}

/** The manifests from the hinted one on (or all of them), oldest first; the last is the newest stored. */
export async function recentManifestNames(storage: Storage): Promise<RecentNames> {
  const hint = await readHint(storage)
  if (!hint) return { names: await listManifestNames(storage), complete: true }
  const names: ManifestName[] = []
  let hinted = false
  for await (const o of storage.list(MANIFEST_DIR, { startAfter: listingStartFor(hint) })) {
    const n = parseManifestKey(o.key)
    // The listing may start before the hint (flat names of its group): older names are left out.
    if (!n || compareNames(n, hint) < 0) continue
    names.push(n)
    if (n.key === hint.key) hinted = true
  }
  // The hinted manifest must exist (its key sorts after its own start, so the listing shows it): a
  // hint naming a key past every real one would hide them all.
  if (!hinted) return { names: await listManifestNames(storage), complete: true }
  return { names: names.sort(compareNames), complete: false }
}
