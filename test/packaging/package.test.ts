// What a user of the published package gets: CommonJS entry points, shipped files, source maps.
// Drives the built dist/ (npm test builds first).
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
// `require('taskpoint')` from inside the repository resolves through the package's own exports
// (self-reference), exactly as from a user's node_modules.
const node = (args: string[]) => spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' })

describe('CommonJS', () => {
  it('require() of every entry point gives the same module objects as import', () => {
    const r = node([
      '--input-type=commonjs',
      '-e',
      `const m = require('taskpoint'); const t = require('taskpoint/tfjs'); require('taskpoint/s3'); require('taskpoint/gcs')
       import('taskpoint').then((e) => console.log(JSON.stringify({ same: e.Checkpointer === m.Checkpointer, checkpointer: typeof m.Checkpointer, fit: typeof t.fitWithCheckpoints })))`,
    ])
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({ same: true, checkpointer: 'function', fit: 'function' })
  })

  it.skipIf(!process.allowedNodeEnvironmentFlags.has('--no-experimental-require-module'))('where Node cannot require ES modules, says what to do instead', () => {
    const r = node(['--no-experimental-require-module', '-e', `try { require('taskpoint') } catch (e) { console.log(e.code + ' ' + e.message) }`])
    expect(r.stdout).toMatch(/^ERR_TASKPOINT_REQUIRE_ESM taskpoint is an ES module .* use `import \.\.\. from 'taskpoint'` or `const m = await import\('taskpoint'\)`/)
  })
})

describe('published files', () => {
  it('ship the LICENSE and the CommonJS entry points, and no tests', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    const files = (JSON.parse(out) as [{ files: { path: string }[] }])[0].files.map((f) => f.path)
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'package.json', 'cjs/index.cjs', 'cjs/tfjs.cjs', 'dist/src/index.js', 'dist/src/cli/main.js']))
    expect(files.filter((f) => f.startsWith('dist/test') || f.startsWith('src/') || f.startsWith('test/'))).toEqual([])
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { license: string; devDependencies: Record<string, string> }
    expect(readFileSync(path.join(root, 'LICENSE'), 'utf8')).toMatch(new RegExp(`^${pkg.license} License`))
    // Test servers with their own engine ranges live under test/servers, not in the package's tree.
    expect(Object.keys(pkg.devDependencies)).not.toContain('fauxqs')
  })

  it('source maps carry their TypeScript sources, which the package does not ship', () => {
    const maps: string[] = []
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name))
        else if (e.name.endsWith('.js.map')) maps.push(path.join(d, e.name))
      }
    }
    walk(path.join(root, 'dist', 'src'))
    walk(path.join(root, 'dist', 'integrations'))
    expect(maps.length).toBeGreaterThan(20)
    for (const m of maps) {
      const map = JSON.parse(readFileSync(m, 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] }
      expect(map.sourcesContent?.length, m).toBe(map.sources.length)
      expect(
        map.sourcesContent!.every((s) => typeof s === 'string' && s.length > 0),
        m,
      ).toBe(true)
    }
  })
})

describe('public surface', () => {
  it('the root exports only what a job writes (at most 30 runtime values); the rest lives under subpaths', async () => {
    const root = await import('../../src/index.js')
    expect(Object.keys(root).length).toBeLessThanOrEqual(30)
    for (const [sub, names] of [
      ['admin', ['listCheckpoints', 'inspectCheckpoint', 'verifyCheckpoints', 'prune', 'collectGarbage']],
      ['storage', ['LocalStorage', 'openStorage', 'defineDriver', 'NotFoundError', 'DEFAULT_RETRY']],
      ['engines', ['supervise', 'detectEngine', 'encodeErrorDocument', 'DEFAULT_EXIT_CODES']],
    ] as const) {
      const r = node(['--input-type=module', '-e', `import('taskpoint/${sub}').then((m) => console.log(JSON.stringify(Object.keys(m))))`])
      expect(r.stderr, sub).toBe('')
      expect(JSON.parse(r.stdout), sub).toEqual(expect.arrayContaining([...names]))
    }
  })

  it('the CLI imports only the public entry points (root and subpaths), never internals', () => {
    const cli = path.join(root, 'src', 'cli')
    const files = readdirSync(cli, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'))
    const publicEntries = new Set(['index.js', 'admin.js', 'engines.js', 'storage/index.js'])
    const offenders: string[] = []
    for (const f of files) {
      const text = readFileSync(path.join(cli, f), 'utf8')
      for (const m of text.matchAll(/from '(\.[^']+)'/g)) {
        const target = path.relative(path.join(root, 'src'), path.resolve(path.dirname(path.join(cli, f)), m[1]!))
        if (!target.startsWith('cli') && !publicEntries.has(target)) offenders.push(`${f} → ${m[1]}`)
      }
    }
    expect(offenders).toEqual([])
  })
})
