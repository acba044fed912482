import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import type { Storage } from '../../src/index.js'
import { acquireShared } from '../../src/checkpoint/locks.js'
import { keysOf } from '../helpers/common.js'
import { localBackend } from '../helpers/backends.js'

describe('held locks', () => {
  it('a refresh in flight when the lock is released does not put it back: no lock is left behind', async () => {
    const s = await localBackend().open()
    // The refresh's check that the lock still exists is answered "there" by the store, and that
    // answer arrives only after release() was called (a slow round trip); then the refresh rewrites it.
    let refreshLooked!: () => void
    const looked = new Promise<void>((r) => (refreshLooked = r))
    let answer!: () => void
    const answered = new Promise<void>((r) => (answer = r))
    let deleted!: () => void
    const lockDeleted = new Promise<void>((r) => (deleted = r))
    let rewritten!: () => void
    const lockRewritten = new Promise<void>((r) => (rewritten = r))
    let held = false
    const storage = Object.create(s) as Storage
    storage.head = async (key) => {
      const r = await s.head(key)
      if (held && key.startsWith('locks/')) {
        refreshLooked()
        await answered
      }
      return r
    }
    storage.put = async (key, body, o) => {
      const r = await s.put(key, body, o)
      if (held && key.startsWith('locks/')) rewritten()
      return r
    }
    storage.delete = async (key) => {
      await s.delete(key)
      if (key.startsWith('locks/')) deleted()
    }
    const lock = await acquireShared(storage, 'w', { staleMs: 60_000, refreshMs: 5 })
    held = true
    await looked
    const releasing = lock.release()
    // Whatever release() does first: here, its delete (were it not to wait) lands before the answer.
    await Promise.race([lockDeleted, sleep(200)])
    answer()
    await releasing
    await Promise.race([lockRewritten, sleep(200)])
    expect(await s.head(lock.key), 'the lock object after release()').toBeUndefined()
    expect(await keysOf(s, 'locks/')).toEqual([])
    await s.close()
  })
})
