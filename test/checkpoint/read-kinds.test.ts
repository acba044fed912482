// What read() and readState() give back, by checkpoint kind (README, "Checkpointer").
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, CheckpointKindError, ConfigError } from '../../src/index.js'

const open = (): Promise<Checkpointer> => Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-kinds-')), { repro: false })

describe('readState()', () => {
  it('returns typed arrays of the stored dtype with their shape, also when misaligned in the packed file', async () => {
    const cp = await open()
    const kernel = new Float32Array([0.5, -1.25, 3e-8, 7, 8, 9])
    const odd = new Uint8Array([1, 2, 3]) // puts everything after it off a 4/8-byte boundary
    const f64 = new Float64Array([Math.PI, -0, Number.MAX_VALUE])
    const i16 = new Int16Array([-32768, 32767])
    await cp.write({
      arrays: { kernel: { data: kernel, shape: [2, 3] }, odd, f64, i16, flag: { data: new Uint8Array([1, 0]), dtype: 'bool' }, iter: { data: new Int32Array([42]), shape: [] } },
    })
    const st = (await cp.readState())!
    expect(st.arrays.kernel!.data).toBeInstanceOf(Float32Array)
    expect(st.arrays.kernel!.data).toEqual(kernel)
    expect(st.arrays.kernel!.shape).toEqual([2, 3])
    expect(st.arrays.odd!.data).toEqual(odd)
    expect(st.arrays.odd!.shape).toEqual([3]) // written without a shape: [length]
    expect(st.arrays.f64!.data).toBeInstanceOf(Float64Array)
    expect(Array.from(st.arrays.f64!.data)).toEqual([Math.PI, -0, Number.MAX_VALUE])
    expect(Object.is(st.arrays.f64!.data[1], -0)).toBe(true)
    expect(st.arrays.i16!.data).toEqual(i16)
    expect(st.arrays.flag).toMatchObject({ dtype: 'bool', shape: [2] })
    expect(st.arrays.flag!.data).toBeInstanceOf(Uint8Array)
    expect(st.arrays.iter!.data).toEqual(new Int32Array([42]))
    expect(st.arrays.iter!.shape).toEqual([]) // a scalar stays a scalar
    await cp.close()
  })

  it('refuses at write time an array that is not a whole number of its elements', async () => {
    const cp = await open()
    expect(() => cp.writeAsync({ arrays: { w: { data: new Uint8Array(6), dtype: 'float32' } } })).toThrow(/6 bytes, not a whole number of float32/)
    await expect(cp.write({ arrays: { w: { data: new Uint8Array(3), dtype: 'int16' } } })).rejects.toThrow(ConfigError)
    await cp.close()
  })

  it('refuses at the call what readers would refuse: a shape that does not match the data, an unknown dtype, metadata that is no object as JSON', async () => {
    // Before, writeAsync took these and the background commit failed later (flush() threw "manifest
    // is malformed"), or write() uploaded every chunk first.
    const cp = await open()
    const bad: [() => void, RegExp][] = [
      [() => cp.writeAsync({ arrays: { w: { data: new Float32Array(4), shape: [3] } } }), /array "w" has shape \[3\], which does not match 16 bytes of float32/],
      [() => cp.writeAsync({ arrays: { w: { data: new Float32Array(4), shape: [2, -2] } } }), /array "w" has a bad shape/],
      [() => cp.writeAsync({ arrays: { w: { data: new Uint16Array(4), dtype: 'float16' as never } } }), /array "w" has unknown dtype "float16" \(known: /],
      [() => cp.writeAsync(new Uint8Array(4), { metadata: new Date(0) as never }), /metadata must be a plain object of JSON values; as JSON it is not an object/],
      [() => cp.writeAsync(new Uint8Array(4), { metadata: { toJSON: () => [1] } as never }), /as JSON it is not an object/],
    ]
    for (const [call, message] of bad) {
      expect(call).toThrow(ConfigError)
      expect(call).toThrow(message)
    }
    await cp.flush()
    expect(await cp.list()).toEqual([])
    // 64-bit integers have no dtype here: they would come back as bytes.
    expect(() => cp.writeAsync({ arrays: { n: new BigInt64Array(2) } })).toThrow(
      /array "n" is a BigInt64Array, which state checkpoints have no dtype for: pass \{ data, dtype: 'bytes' \}/,
    )
    await cp.flush()
    expect(await cp.list()).toEqual([])
    // One-byte elements are bytes, as before: a Uint8ClampedArray is stored.
    await cp.write({ arrays: { c: new Uint8ClampedArray([1, 2, 3]) } })
    expect(Array.from((await cp.readState())!.arrays.c!.data as Uint8Array)).toEqual([1, 2, 3])
    await cp.write({ arrays: { w: { data: new Float32Array(4), shape: [2, 2] } } }, { metadata: { at: new Date(0) } })
    expect((await cp.readState())!.arrays.w!.shape).toEqual([2, 2])
    await cp.close()
  })
})

describe('read() and readState() on the other kind', () => {
  it('throw CheckpointKindError naming the method to use, never an older checkpoint of the asked kind', async () => {
    const cp = await open()
    await cp.write(Buffer.from('bytes first'))
    await cp.write({ arrays: { w: new Float32Array(2) } })
    const e = await cp.read().catch((x: unknown) => x)
    expect(e).toBeInstanceOf(CheckpointKindError)
    expect(e).toMatchObject({ code: 'WrongKind', message: expect.stringMatching(/is a state checkpoint.*use readState\(\)/) })
    await cp.write(Buffer.from('bytes again'))
    await expect(cp.readState()).rejects.toThrow(/is a bytes checkpoint.*use read\(\)/)
    expect(Buffer.from((await cp.read())!).toString()).toBe('bytes again')
    await cp.close()
  })
})

describe('save() and the names restore keeps for itself', () => {
  it("leaves out a restore's staging directory (with a warning), so no later restore sweeps a saved one away", async () => {
    // Before: a folder named like one was saved; restored, the next restore into the same place
    // took it for a dead process's staging directory and deleted it, even when that restore failed.
    const base = mkdtempSync(path.join(tmpdir(), 'tp-stage-name-'))
    const src = path.join(base, 'src')
    const leftover = path.join(src, '.tp-restore-999999-abcdef12')
    mkdirSync(leftover, { recursive: true })
    writeFileSync(path.join(leftover, 'results.csv'), 'epoch,loss')
    writeFileSync(path.join(src, 'model.bin'), 'weights')
    const warnings: string[] = []
    const cp = await Checkpointer.open(path.join(base, 'store'), { repro: false, onWarning: (m) => warnings.push(m) })
    await cp.save(src)
    expect(warnings.join('\n')).toMatch(/not saving .*\.tp-restore-999999-abcdef12: a restore's staging directory/)
    expect((await cp.restore(path.join(base, 'out')))?.files).toEqual(['model.bin'])
    await cp.close()
  })
})

describe('reading a pinned id', () => {
  it('an id that is not there is NoSuchCheckpoint, and what is no id at all a ConfigError, not "damaged"', async () => {
    const cp = await Checkpointer.open(mkdtempSync(path.join(tmpdir(), 'tp-pinned-')), { repro: false })
    const info = await cp.write(new Uint8Array([1, 2, 3]), { step: 4 })
    const gone = info.id.replace(/s000000000004\.tpm$/, 's000000000009.tpm').replace('-000000000001-', '-000000000009-')
    expect(gone).not.toBe(info.id)
    await expect(cp.read(gone)).rejects.toMatchObject({
      code: 'NoSuchCheckpoint',
      message: expect.stringMatching(/no checkpoint .* deleted by retention or prune, or never written/),
    })
    for (const bad of [5, '', 'manifests/x.tpm', '../outside.tpm']) {
      await expect(cp.read(bad as never)).rejects.toThrow(/not a checkpoint id/)
    }
    expect(await cp.read(info.id)).toEqual(new Uint8Array([1, 2, 3]))
    await cp.close()
  })
})
