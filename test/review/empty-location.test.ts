// A maintenance run on a location with no checkpoints leaves it as it found it. Both tests failed on
// 6d86ed0, which kept emptied top-level directories (locks/) to save a commit a mkdir and an rmdir.
import { mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { collectGarbage } from '../../src/admin.js'
import { openLocation, requireCheckpoints } from '../../src/cli/open.js'

describe('top-level directories kept when emptied (pruneEmptyDirs)', () => {
  /** What `taskpoint gc DIR --dry-run` does, on a fresh empty directory. */
  async function gcDryRun(): Promise<string> {
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-review-eph-'))
    const a = await openLocation(dir)
    try {
      const g = await collectGarbage(a.storage, { dryRun: true })
      expect(g.skipped).toBeUndefined()
    } finally {
      await a.cp.close()
    }
    return dir
  }

  it('gc --dry-run on an empty local location leaves the directory as it found it', async () => {
    const dir = await gcDryRun()
    // The lock's directory goes with the lock.
    expect(readdirSync(dir)).toEqual([])
  })

  it('after a gc, an empty local location still reads as "no checkpoints", not as a foreign prefix', async () => {
    const dir = await gcDryRun()
    // What `taskpoint ls DIR` does next: a leftover empty locks/ would count as "an object".
    const b = await openLocation(dir)
    try {
      await expect(requireCheckpoints(b.storage, b.cp)).rejects.toMatchObject({ code: 'NoCheckpoints' })
    } finally {
      await b.cp.close()
    }
  })
})
