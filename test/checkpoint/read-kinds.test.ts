// What read() and readState() give back, by checkpoint kind (README, "Checkpointer").
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { Checkpointer, CheckpointKindError } from '../../src/index.js'

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
    await expect(cp.write({ arrays: { w: { data: new Uint8Array(3), dtype: 'int16' } } })).rejects.toThrow(TypeError)
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
