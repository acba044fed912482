import { readdir, stat } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { isCheckpointKey } from '../admin.js'
import { Checkpointer, TaskpointError, openStorage, type CheckpointInfo, type CheckpointerOptions, type Storage } from '../index.js'
import { LocalStorage } from '../storage/index.js'
import { UsageError } from './args.js'

/** The CLI gives up on an unreachable store after a few seconds rather than the library's longer budget. */
const CLI_RETRY = { retries: 3, minTimeoutMs: 200, maxTimeoutMs: 2000 }

export async function openLocation(uri: string | undefined, extra: Pick<CheckpointerOptions, 'onProgress'> = {}): Promise<{ storage: Storage; cp: Checkpointer }> {
  if (!uri) throw new UsageError('give a checkpoint URI (a path, file://…, s3://bucket/prefix or gs://bucket/prefix)')
  const storage = await openStorage(uri, { retry: CLI_RETRY })
  try {
    if (storage instanceof LocalStorage) await requireDirectory(storage.root)
    const cp = await Checkpointer.open(storage, { repro: false, onWarning: (m) => console.error(`warning: ${m}`), ...extra })
    return { storage, cp }
  } catch (e) {
    await storage.close()
    throw e
  }
}

/** A local location the CLI reads must exist: saying "no checkpoints" for a typo hides the typo. */
async function requireDirectory(root: string): Promise<void> {
  let st: Stats
  try {
    st = await stat(root)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new TaskpointError('NotFound', `${root} does not exist`)
    throw e
  }
  if (!st.isDirectory()) throw new TaskpointError('NotADirectory', `${root} is a file, not a checkpoint directory`)
}

/**
 * One object of the location that is not a manifest, if any. On local disk only the top directory
 * is read: listing is recursive there, and `taskpoint ls /usr` must not walk all of /usr to say it
 * holds no checkpoints. Remote listings come a page at a time, so the first object is cheap.
 */
async function someOtherObject(storage: Storage): Promise<string | undefined> {
  if (storage instanceof LocalStorage) {
    const names = (await readdir(storage.root)).filter((n) => !isCheckpointKey(`${n}/`)).sort()
    return names[0]
  }
  for await (const o of storage.list()) if (!isCheckpointKey(o.key)) return o.key
  return undefined
}

/** Fails with a clear message when the URI holds no checkpoints (empty, or some other data). */
export async function requireCheckpoints(storage: Storage, cp: Checkpointer): Promise<CheckpointInfo[]> {
  const list = await cp.list()
  if (list.length > 0) return list
  const other = await someOtherObject(storage)
  if (other !== undefined) {
    throw new TaskpointError('NotACheckpoint', `${storage.uri} holds objects (e.g. "${other}") but no taskpoint checkpoints: is this the right prefix?`)
  }
  if (cp.lastSkipped.length > 0)
    throw new TaskpointError('NoIntactCheckpoint', `${storage.uri}: every checkpoint is damaged (${cp.lastSkipped.length}); see \`taskpoint verify ${storage.uri} --all\``)
  throw new TaskpointError('NoCheckpoints', `no checkpoints at ${storage.uri}`)
}

/** A STEP number (newest checkpoint with that step) or a checkpoint id; default: the newest. */
export function pick(list: CheckpointInfo[], which: string | undefined): CheckpointInfo {
  if (which === undefined) return list.at(-1)!
  const found = /^\d+$/.test(which)
    ? list.filter((c) => c.step === Number(which)).at(-1)
    : list.find((c) => c.id === which || c.id === `manifests/${which}` || c.id.endsWith(`/${which}`))
  if (!found) throw new TaskpointError('NoSuchCheckpoint', `no checkpoint "${which}": steps here are ${summariseSteps(list)}`)
  return found
}

function summariseSteps(list: CheckpointInfo[]): string {
  const steps = list.map((c) => c.step)
  return steps.length > 12 ? `${steps.slice(0, 5).join(', ')}, …, ${steps.slice(-5).join(', ')}` : steps.join(', ')
}
