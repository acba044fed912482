#!/usr/bin/env node
// Makes sure a real `redis-server` is on PATH for the BullMQ fleet tests (no Redis mock): installs
// Debian's package once with apt-get when it is missing. Idempotent: a no-op when redis-server is
// already there. Imported by ensure-test-servers.mjs; runnable on its own too.
import { execFileSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import path from 'node:path'

/** The redis-server binary on PATH (or in Debian's sbin dirs), or undefined. */
export function findRedisServer() {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/usr/sbin', '/usr/local/bin']
  for (const d of dirs) {
    if (!d) continue
    const p = path.join(d, 'redis-server')
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {}
  }
  return undefined
}

function onPath(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export function ensureRedis() {
  const found = findRedisServer()
  if (found) return found
  if (!onPath('apt-get')) {
    throw new Error(
      'redis-server is not installed and apt-get is not available: install Redis ≥ 6.2 (e.g. `brew install redis`, `dnf install redis`) so that `redis-server` is on PATH, then rerun the tests',
    )
  }
  // Root runs apt-get directly; anyone else needs sudo without a password prompt.
  const asRoot = process.getuid?.() === 0
  if (!asRoot && !onPath('sudo')) throw new Error('redis-server is missing and installing it needs root: run `apt-get install -y redis-server` as root')
  const apt = (args) =>
    execFileSync(asRoot ? 'apt-get' : 'sudo', asRoot ? args : ['-n', 'apt-get', ...args], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    })
  console.error('[taskpoint] installing redis-server for the BullMQ tests (Debian package, once)...')
  try {
    apt(['update', '-qq'])
    apt(['install', '-y', '-qq', '--no-install-recommends', 'redis-server'])
  } catch (e) {
    throw new Error(`could not install redis-server with apt-get (${e.message}): install it yourself (apt-get install -y redis-server) and rerun`)
  }
  const after = findRedisServer()
  if (!after) throw new Error('apt-get installed redis-server but it is not on PATH: look for it under /usr/bin or /usr/sbin')
  return after
}

ensureRedis()
