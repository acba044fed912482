#!/usr/bin/env node
// Installs the GCS emulator (firebase-tools, ~300 MB) into test/servers/gcs from its own lockfile,
// once. It is kept out of the package's devDependencies so `npm install && npm run demo` stays light.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import './ensure-redis.mjs' // redis-server for the BullMQ fleet tests (apt-get, once)

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test', 'servers', 'gcs')
if (existsSync(path.join(dir, 'node_modules', 'firebase-tools', 'package.json'))) process.exit(0)
console.error('[taskpoint] installing the GCS emulator for the tests (firebase-tools, once; a few minutes)...')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
execFileSync(npm, ['ci', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], { cwd: dir, stdio: 'inherit' })
