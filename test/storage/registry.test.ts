import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  Checkpointer,
  ConfigError,
  StorageError,
  TaskConfigError,
  TaskpointError,
  isAlreadyExists,
  isConfigError,
  isNotFound,
  isTransient,
  openStorage,
  type Storage,
} from '../../src/index.js'
import { LocalStorage, StorageConfigError, parseStorageUri } from '../../src/storage/index.js'
import { BullmqConfigError } from '../../integrations/bullmq/location.js'
import { validateEntryPath } from '../../src/format/manifest.js'
import { supervise } from '../../src/runtime/supervisor.js'
import { builtinDrivers, type DriverName } from '../../src/storage/registry.js'

const freshDir = (): string => mkdtempSync(path.join(tmpdir(), 'taskpoint-registry-'))

async function failure(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    return e
  }
  throw new Error('expected a failure')
}

describe('driver registry', () => {
  it('every registry line loads a driver of that name, and its schemes parse to it', async () => {
    for (const [name, entry] of Object.entries(builtinDrivers) as [DriverName, (typeof builtinDrivers)[DriverName]][]) {
      const { driver } = await entry.load()
      expect(driver.name).toBe(name)
      for (const scheme of entry.schemes) {
        const uri = scheme === 'file' ? `file://${freshDir()}` : `${scheme}://bucket-x/p/q`
        expect(parseStorageUri(uri).backend).toBe(name)
      }
    }
    expect(parseStorageUri('gs://b/p/')).toEqual({ backend: 'gcs', bucket: 'b', prefix: 'p' })
    expect(parseStorageUri('./rel').backend).toBe('local')
  })

  it('an unknown scheme names the known ones and blames no backend', () => {
    const e = (() => {
      try {
        parseStorageUri('azure://c/p')
      } catch (err) {
        return err
      }
      return undefined
    })()
    expect(e).toBeInstanceOf(StorageConfigError)
    const err = e as StorageConfigError
    expect(err.code).toBe('InvalidConfig')
    expect(err.backend).toBeUndefined()
    expect(err.message).toMatch(/use a path or file:\/\/\/dir, s3:\/\/bucket\/prefix, gs:\/\/bucket\/prefix$/)
    expect(err.message).not.toMatch(/\[local/)
  })

  it("openStorage hands each driver its own options (and the shared retry) from the registry's record", async () => {
    const s3 = await openStorage('s3://bucket-x/run', {
      s3: { conditionalCreate: false, clientConfig: { region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } } },
      gcs: { conditionalCreate: true },
    })
    expect(s3.backend).toBe('s3')
    expect(s3.uri).toBe('s3://bucket-x/run')
    expect(s3.capabilities).toEqual({ conditionalCreate: false, preferredConcurrency: 16, preferredChunkSize: 8 * 1024 * 1024, takesCrc32: true })
    await s3.close()
    const gcs = await openStorage('gs://bucket-x/run', { s3: { conditionalCreate: true }, gcs: { conditionalCreate: false, clientOptions: { projectId: 'p' } } })
    expect(gcs.capabilities).toEqual({ conditionalCreate: false, preferredConcurrency: 16, preferredChunkSize: 8 * 1024 * 1024 })
    await gcs.close()
    const dir = freshDir()
    const local = await openStorage(dir, { retry: { retries: 0 }, local: { durable: false } })
    expect(local).toBeInstanceOf(LocalStorage)
    expect(local.capabilities).toEqual({ conditionalCreate: true, preferredConcurrency: 8, localRoot: path.resolve(dir) })
    await local.close()
  })

  it("the Checkpointer's default concurrency is the driver's declared preference, not a guess from its name", async () => {
    const inner = new LocalStorage(freshDir())
    let inFlight = 0
    let most = 0
    // A driver that asks for one transfer at a time; under the old `backend === 'local' ? 8 : 16`
    // rule it got 8 parallel chunk puts.
    const one: Storage = {
      backend: 'serial-test',
      uri: inner.uri,
      capabilities: { conditionalCreate: true, preferredConcurrency: 1 },
      put: async (key, body, options) => {
        const chunk = key.startsWith('chunks/')
        if (chunk) most = Math.max(most, ++inFlight)
        try {
          return await inner.put(key, body, options)
        } finally {
          if (chunk) inFlight--
        }
      },
      get: (key, options) => inner.get(key, options),
      head: (key) => inner.head(key),
      list: (prefix) => inner.list(prefix),
      delete: (key) => inner.delete(key),
      deleteMany: (keys) => inner.deleteMany(keys),
      sync: () => inner.sync(),
      sweep: (options) => inner.sweep(options),
      close: () => inner.close(),
    }
    const cp = await Checkpointer.open(one, { chunkSize: 1024 })
    const data = randomBytes(48 * 1024)
    await cp.write(data, { step: 1 })
    expect(Buffer.from((await cp.read())!).equals(data)).toBe(true)
    await cp.close()
    expect(most).toBe(1)
  })
})

describe("drivers' options", () => {
  it.each([
    ['s3://bkt/p', { s3: { pageSize: 0 } }, /\[s3\] pageSize must be a whole number from 1 to 1000, got 0/],
    ['s3://bkt/p', { s3: { partSize: 1024 } }, /\[s3\] partSize must be a whole number of bytes from 5242880/],
    ['s3://bkt/p', { s3: { queueSize: 0 } }, /\[s3\] queueSize must be/],
    ['s3://bkt/p', { s3: { requestTimeoutMs: Number.POSITIVE_INFINITY } }, /\[s3\] requestTimeoutMs must be a number of ms from 1 to 2147483647, got Infinity/],
    ['gs://bkt/p', { gcs: { pageSize: -5 } }, /\[gcs\] pageSize must be a whole number from 1 to 1000, got -5/],
    ['gs://bkt/p', { gcs: { requestTimeoutMs: 0 } }, /\[gcs\] requestTimeoutMs must be/],
    ['/tmp/tp-never-made', { retry: { deadlineMs: 0 } }, /\[local\] retry\.deadlineMs must be a number of ms from 1/],
    ['/tmp/tp-never-made', { retry: { deadlineMs: Number.NaN } }, /retry\.deadlineMs must be/],
    ['/tmp/tp-never-made', { retry: { retries: 'lots' } }, /retry\.retries must be a whole number from 0 to 100, got "lots"/],
    ['/tmp/tp-never-made', { retry: { minTimeoutMs: 2 ** 31 } }, /retry\.minTimeoutMs must be a number of ms from 0 to 2147483647/],
    ['/tmp/tp-never-made', { local: { durable: 'no' } }, /\[local\] durable must be true or false, got "no"/],
    ['file://host/dir', {}, /not a usable file URI \(host must be "localhost" or empty/],
    ['file:///a%2Fb', {}, /not a usable file URI \(path must not include encoded \/ characters\)/],
  ])('%s with %o is a StorageConfigError at open', async (uri, options, message) => {
    // Before: a page size of 0 listed nothing (readers saw no checkpoints after a write that
    // resolved), a deadline of 0 failed every operation as "transient", a 1 KiB part failed the
    // first large upload with an Unknown error, a file URI with a host threw a raw TypeError.
    const e = await openStorage(uri, options as never).then(
      async (s) => {
        await s.close()
        return undefined
      },
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(StorageConfigError)
    expect((e as StorageConfigError).code).toBe('InvalidConfig')
    expect((e as Error).message).toMatch(message)
  })
})

describe('one error vocabulary', () => {
  it('isNotFound / isAlreadyExists / isTransient answer from the code, whichever driver threw', async () => {
    const s = new LocalStorage(freshDir())
    const missing = await failure(s.get('no/such'))
    expect(isNotFound(missing)).toBe(true)
    expect(isTransient(missing)).toBe(false)
    await s.put('k', Buffer.from('a'), { ifAbsent: true })
    const taken = await failure(s.put('k', Buffer.from('b'), { ifAbsent: true }))
    expect(isAlreadyExists(taken)).toBe(true)
    expect(isNotFound(taken)).toBe(false)
    expect(isNotFound(new Error('NotFound'))).toBe(false)
    expect(isTransient(new StorageError('Transient', 'x', { backend: 'custom' }))).toBe(true)
  })

  it('option mistakes of every layer are ConfigErrors and keep their codes', async () => {
    const task = new TaskConfigError('bad task option')
    expect(task).toBeInstanceOf(ConfigError)
    expect(task).toBeInstanceOf(TaskpointError)
    expect(task.code).toBe('TaskConfig')
    const bull = new BullmqConfigError('bad job')
    expect(bull).toBeInstanceOf(ConfigError)
    expect(bull.code).toBe('BullmqConfig')
    expect(new ConfigError('x').code).toBe('InvalidOption')
    for (const e of [task, bull, new ConfigError('x'), await failure(() => parseStorageUri(''))]) expect(isConfigError(e)).toBe(true)
    expect(isConfigError(await failure(new LocalStorage(freshDir()).get('missing')))).toBe(false)
    const cp = await Checkpointer.open(freshDir())
    const bad = await failure(cp.write(Buffer.from('x'), { step: -1 }))
    expect(bad).toBeInstanceOf(ConfigError)
    expect((bad as ConfigError).code).toBe('InvalidOption')
    await cp.close()
    // Were RangeErrors: a lock timing and the supervisor's retry count.
    // A bad lock timing is refused at open, not at the first commit.
    const badLock = await failure(Checkpointer.open(freshDir(), { locks: { staleMs: 0 } }))
    expect(badLock).toBeInstanceOf(ConfigError)
    expect((badLock as ConfigError).message).toMatch(/locks\.staleMs/)
    const badDelay = await failure(supervise({ command: process.execPath, args: ['-e', ''], delayMs: 2 ** 31 }))
    expect(badDelay).toBeInstanceOf(ConfigError)
    expect((badDelay as ConfigError).message).toMatch(/delayMs must be a number of ms from 0 to 2147483647/)
    const badRetries = await failure(supervise({ command: process.execPath, args: ['-e', ''], retries: 11 }))
    expect(badRetries).toBeInstanceOf(ConfigError)
    expect((badRetries as ConfigError).code).toBe('InvalidOption')
  })

  it('a bad name inside a checkpoint is InvalidKey without blaming a storage backend', () => {
    const e = (() => {
      try {
        validateEntryPath('../escape')
      } catch (err) {
        return err
      }
      return undefined
    })() as StorageError
    expect(e.code).toBe('InvalidKey')
    expect(e.backend).toBeUndefined()
    expect(e.message).toMatch(/^\[name "\.\.\/escape"\]/)
  })
})
