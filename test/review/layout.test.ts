// Hostile review of key layout 2 (grouped manifests), the local listing walk that skips whole
// directories, and the delayed sweep of killed writers' leftovers (84aba40). Each test here
// failed on 84aba40 for the reason its name gives.
import { afterAll, describe, expect, it } from 'vitest'
import { Checkpointer, type Storage } from '../../src/index.js'
import { allBackends, closeEnforcingProxies, type Backend } from '../helpers/backends.js'
import { quiet } from '../helpers/common.js'

afterAll(closeEnforcingProxies)

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** `s` with its sweep counted and `gate`d: each call waits for `gate` before sweeping. */
function countedSweep(s: Storage, gate: Promise<void> = Promise.resolve()) {
  const storage = Object.create(s) as Storage
  const state = { started: 0, finished: 0, closed: false, afterClose: 0 }
  let onStart: () => void = () => {}
  const started = new Promise<void>((r) => (onStart = r))
  storage.sweep = async (o) => {
    state.started++
    if (state.closed) state.afterClose++
    onStart()
    await gate
    const r = await s.sweep!(o)
    state.finished++
    return r
  }
  return { storage, state, started }
}

describe.each(allBackends().map((b) => [b.name, b] as const))('layout review: the delayed sweep on %s', (_name, backend: Backend) => {
  it('a claim still in flight when close() runs schedules no sweep for after close()', async () => {
    const s = await backend.open()
    const { storage, state } = countedSweep(s)
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    let markerPut: () => void = () => {}
    const putting = new Promise<void>((r) => (markerPut = r))
    const put = storage.put.bind(storage)
    storage.put = async (key, body, o) => {
      if (key.startsWith('writers/')) {
        markerPut()
        await gate
      }
      return put(key, body, o)
    }
    const cp = await Checkpointer.open(storage, { ...quiet, gc: { sweepAfterMs: 10 } })
    const claimed = cp.claim().catch(() => {})
    await putting
    await cp.close()
    state.closed = true
    release()
    await claimed
    await sleep(150)
    expect(state.afterClose, 'sweeps started after close() resolved').toBe(0)
    await s.close()
  })

  it('a sweep already running when close() runs ends before close() resolves (the storage is not used after it)', async () => {
    const s = await backend.open()
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const { storage, state, started } = countedSweep(s, gate)
    const cp = await Checkpointer.open(storage, { ...quiet, gc: { sweepAfterMs: 0 } })
    await cp.write(Buffer.from('one'))
    await started
    setTimeout(release, 100)
    await cp.close()
    expect(state.finished, 'the sweep finished before close() resolved').toBe(1)
    await s.close()
  })
})
