// The README's code, as a new user meets it: every ```ts block is type-checked against the built
// package (imported as `taskpoint` and `taskpoint/tfjs`, the way a user imports it), and every block
// that is a complete program is run. Blocks that are not programs say so in their first line,
// `// fragment (uses: a, b)`, and are type-checked with those names declared (types below).
// S3 blocks run against the S3 test server: AWS_ENDPOINT_URL and test credentials come from the
// environment as a user's would (AWS_REGION deliberately not: a client must not depend on it), and
// the example host minio.internal is replaced by the server's address.
import { CreateBucketCommand } from '@aws-sdk/client-s3'
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { makeS3Client } from '../../src/storage/s3.js'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const readme = readFileSync(path.join(root, 'README.md'), 'utf8')

interface Block {
  index: number
  /** 1-based README line of the block's first code line. */
  line: number
  code: string
  fragment: boolean
  uses: string[]
}

function blocks(md: string): Block[] {
  const out: Block[] = []
  const lines = md.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(ts|typescript)\b/.exec(lines[i]!)
    if (!open) continue
    const start = i + 1
    while (i + 1 < lines.length && lines[i + 1] !== '```') i++
    const code = lines.slice(start, i + 1).join('\n')
    i++
    const head = /^\/\/ fragment\b(?: \(uses: ([^)]*)\))?/.exec(code)
    out.push({ index: out.length, line: start + 1, code, fragment: Boolean(head), uses: head?.[1]?.split(',').map((s) => s.trim()) ?? [] })
  }
  return out
}

/** Types of the names fragments may assume. */
const DECLARED: Record<string, string> = {
  uriOrStorage: 'string | __tp.Storage',
  options: '__tp.CheckpointerOptions',
  bytes: 'Uint8Array',
  f32: 'Float32Array',
  i32: 'Int32Array',
  step: 'number',
  metadata: 'Record<string, unknown>',
  otherCheckpointer: '__tp.Checkpointer',
  cp: '__tp.Checkpointer',
  trainStep: '(i: number) => number',
  tf: 'typeof __tf',
  model: '__tf.LayersModel',
  x: '__tf.Tensor',
  y: '__tf.Tensor',
  dataset: '__tf.data.Dataset<__tf.TensorContainer>',
  epochs: 'number',
  batchSize: 'number',
}

const all = blocks(readme)
// Under the repository, so `import 'taskpoint'` resolves through the package's own exports (as
// from a user's node_modules) and @tensorflow/tfjs, @aws-sdk/client-s3 from its node_modules.
const work = path.join(root, '.tmp', `readme-${process.pid}`)
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** Writes every block under `work` and compiles them together; returns tsc's complaints, by README line. */
function compileAll(): { errors: string[]; status: number | null } {
  mkdirSync(work, { recursive: true })
  const offsets = new Map<string, { block: Block; prelude: number }>()
  for (const b of all) {
    const prelude = b.fragment
      ? [`import type * as __tp from 'taskpoint'`, `import type * as __tf from '@tensorflow/tfjs'`, ...b.uses.map((u) => `declare const ${u}: ${DECLARED[u]}`)]
      : []
    const file = `block-${b.index}.ts`
    writeFileSync(path.join(work, file), `${[...prelude, b.code].join('\n')}\nexport {}\n`)
    offsets.set(file, { block: b, prelude: prelude.length })
  }
  writeFileSync(
    path.join(work, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        lib: ['ES2023'],
        types: ['node'],
        strict: true,
        skipLibCheck: true,
        outDir: 'out',
        rootDir: '.',
      },
      include: ['block-*.ts'],
    }),
  )
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', work, '--pretty', 'false'], { encoding: 'utf8' })
  // Name README lines, not temp files, in failures.
  const errors = (tsc.stdout + tsc.stderr)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const m = /^(block-\d+\.ts)\((\d+),(\d+)\): (.*)$/.exec(l)
      const at = m && offsets.get(m[1]!)
      return at ? `README.md:${at.block.line + Number(m[2]) - 1 - at.prelude}: ${m[4]}` : l
    })
  return { errors, status: tsc.status }
}

describe('README', () => {
  let compiled: ReturnType<typeof compileAll>
  beforeAll(() => {
    compiled = compileAll()
  }, 120_000)

  it('has TypeScript blocks, complete programs among them, and every fragment declares what it uses', () => {
    expect(all.length).toBeGreaterThanOrEqual(7)
    expect(all.filter((b) => !b.fragment).length).toBeGreaterThanOrEqual(4)
    for (const b of all.filter((x) => x.fragment)) for (const u of b.uses) expect(DECLARED, `README line ${b.line}: unknown name ${u}`).toHaveProperty(u)
  })

  it('every block type-checks against the built package (strict)', () => {
    expect(compiled.errors).toEqual([])
    expect(compiled.status).toBe(0)
  })

  const programs = all.filter((b) => !b.fragment)
  it.each(programs.map((b) => [b.line, b] as const))(
    'the program at README line %i runs as written',
    async (_line, b) => {
      const js = path.join(work, 'out', `block-${b.index}.js`)
      const s3 = inject('s3Endpoint')
      // The example host of the own-client block becomes the test server; nothing else is changed.
      writeFileSync(js, readFileSync(js, 'utf8').replaceAll('https://minio.internal:9000', s3))
      const buckets = [...new Set([...b.code.matchAll(/s3:\/\/([a-z0-9.-]+)\//g)].map((m) => m[1]!))]
      if (buckets.length > 0) {
        const c = makeS3Client({ clientConfig: { endpoint: s3, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } } })
        for (const Bucket of buckets) await c.send(new CreateBucketCommand({ Bucket })).catch(() => {})
        c.destroy()
      }
      const env: NodeJS.ProcessEnv = {}
      for (const [k, v] of Object.entries(process.env)) if (!/^(AWS_|TASKPOINT_|GOOGLE_|STORAGE_EMULATOR_HOST)/.test(k)) env[k] = v
      Object.assign(env, { AWS_ENDPOINT_URL: s3, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' })
      const cwd = mkdtempSync(path.join(tmpdir(), 'tp-readme-run-'))
      env.TASKPOINT_CHECKPOINT = path.join(cwd, 'engine-checkpoint') // what an engine (or the user) sets for runMain
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [js], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
        let stdout = ''
        let stderr = ''
        p.stdout.on('data', (d) => (stdout += d))
        p.stderr.on('data', (d) => (stderr += d))
        p.on('exit', (code) => resolve({ code, stdout, stderr }))
      })
      expect(r.code, `README line ${b.line}\n${r.stderr}`).toBe(0)
      expect(r.stderr).not.toMatch(/ExperimentalWarning|UnhandledPromiseRejection/)
      // taskpoint's own clients never print the AWS SDK's Node 20 notice; a client the user builds
      // does (AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true silences it, see the README).
      if (!b.code.includes('new S3Client(')) expect(r.stderr).not.toMatch(/NodeVersionSupportWarning/)
      // `console.log(...)  // 9, after ...`: the README says what the line prints; it must.
      const lines = r.stdout.split('\n')
      for (const m of b.code.matchAll(/console\.log\(.*\)\s*\/\/\s*([^,\s]+)/g)) expect(lines, `README line ${b.line}`).toContain(m[1])
      // runMain prints the task's output as JSON: the README's own programs keep it one short line.
      if (b.code.includes('runMain(')) {
        const last = lines.filter((l) => l.startsWith('{')).at(-1)!
        expect(last.length).toBeLessThan(200)
        expect(JSON.parse(last)).toEqual({ loss: expect.any(Number) })
      }
    },
    120_000,
  )
})
