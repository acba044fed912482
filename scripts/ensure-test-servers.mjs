#!/usr/bin/env node
// The one entry point for test prerequisites, run by `npm test` (and by vitest's global setup, so
// `npx vitest run FILE` works too). Each test server lives in its own directory under test/servers
// with its own package.json and lockfile, installed here on first use:
//   - test/servers/s3:  fauxqs, the in-memory S3 server (declares Node >= 22.5; kept out of the
//                       package so `npm install` of taskpoint prints no EBADENGINE warning)
//   - test/servers/gcs: the Cloud Storage emulator inside firebase-tools (~300 MB, a few minutes)
// Both are kept out of the package's devDependencies so `npm install && npm run demo` stays light.
// Other prerequisites are added as one import line each, below.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import './ensure-redis.mjs' // redis-server for the BullMQ fleet tests (apt-get, once)
import { fileURLToPath } from 'node:url'

const servers = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'servers')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** Installs `dir` from its lockfile unless every pinned dependency is already there at its pinned version. */
function ensureInstalled(name, what, note) {
  const dir = path.join(servers, name)
  const pinned = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).dependencies
  const current = Object.entries(pinned).every(([pkg, version]) => {
    const file = path.join(dir, 'node_modules', pkg, 'package.json')
    return existsSync(file) && JSON.parse(readFileSync(file, 'utf8')).version === version
  })
  if (current) return
  console.error(`[taskpoint] installing ${what} for the tests into test/servers/${name} (once${note ? `; ${note}` : ''})...`)
  // --engine-strict=false: these are tools run by the tests, not part of the package.
  execFileSync(npm, ['ci', '--no-audit', '--no-fund', '--ignore-scripts', '--engine-strict=false', '--loglevel=error'], { cwd: dir, stdio: 'inherit' })
}

ensureInstalled('s3', 'the S3 test server (fauxqs)')
ensureInstalled('gcs', 'the GCS emulator (firebase-tools)', 'a few minutes')
