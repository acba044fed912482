import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, FencedError, PreemptedError, RecoverableError } from '../../src/index.js'
import { TransientStorageError } from '../../src/storage/index.js'
import { parseStorageUri } from '../../src/storage/resolve.js'
import { BullmqConfigError, classifyJobError, cleanupCompleted, jobCheckpointUri } from '../../integrations/bullmq/index.js'

describe('taskpoint/bullmq pieces', () => {
  it('derives one location per job; hostile job ids cannot escape or collide', () => {
    expect(jobCheckpointUri('s3://b/fleet/', 'train', 'job-1')).toBe('s3://b/fleet/train/job-1')
    expect(jobCheckpointUri('s3://b/fleet', 'train', '../other')).toBe('s3://b/fleet/train/%2E%2E%2Fother')
    expect(jobCheckpointUri('/d', 'q', 'a/b')).not.toBe(jobCheckpointUri('/d', 'q', 'a%2Fb'))
    expect(() => jobCheckpointUri('s3://b', 'q', '')).toThrow(BullmqConfigError)
    // Under a file:// base the location is a path of the encoded segments: decoded, "%2E" would be a
    // dot segment (job "." at the queue's own directory) and "~%2E" and "%7E%2E" the same place.
    const ids = ['.', '..', '~.', '%2E', 'a/b', 'a%2Fb', 'job-1']
    const dirs = ids.map((id) => parseStorageUri(jobCheckpointUri('file:///d/fleet', 'q', id)).bucket)
    expect(new Set(dirs).size).toBe(ids.length)
    for (const d of dirs) expect(path.dirname(d)).toBe('/d/fleet/q')
    expect(dirs[0]).toBe('/d/fleet/q/%2E')
    expect(parseStorageUri(jobCheckpointUri('file:///d/fleet', '..', 'job')).bucket).toBe('/d/fleet/%2E%2E/job')
    expect(() => jobCheckpointUri('file://host/x', 'q', 'j')).toThrow(BullmqConfigError)
    expect(jobCheckpointUri('s3://b', 'q', '...')).toBe('s3://b/q/%2E%2E%2E')
    expect(() => jobCheckpointUri('', 'q', '1')).toThrow(BullmqConfigError)
  })

  it('maps errors onto BullMQ outcomes', () => {
    expect(classifyJobError(new RecoverableError('flaky'), false)).toBe('recoverable')
    expect(classifyJobError(new TransientStorageError({ backend: 's3' }, 'reset'), false)).toBe('recoverable')
    expect(classifyJobError(new TypeError('bug'), false)).toBe('permanent')
    expect(classifyJobError(new PreemptedError('SIGTERM'), false)).toBe('preempted')
    expect(classifyJobError(new TypeError('bug during the final save'), true)).toBe('preempted')
    expect(classifyJobError(new FencedError('a', 'b'), true)).toBe('superseded')
  })

  it("'final' keeps only the newest checkpoint, still readable; 'delete' removes the location", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-bullmq-'))
    const cp = await Checkpointer.open(dir)
    for (let i = 1; i <= 3; i++) await cp.write(Buffer.from(`state ${i}`), { step: i })
    await cp.close()
    await cleanupCompleted(dir, 'final', { gc: { minAgeMs: 0 } })
    const after = await Checkpointer.open(dir)
    expect((await after.list()).map((c) => c.step)).toEqual([3])
    expect(Buffer.from((await after.read())!).toString()).toBe('state 3')
    await after.close()
    await cleanupCompleted(dir, 'delete')
    const gone = await Checkpointer.open(dir)
    expect(await gone.list()).toEqual([])
    await gone.close()
    await expect(cleanupCompleted(dir, 'sometimes' as never)).rejects.toThrow(BullmqConfigError)
  })
})
