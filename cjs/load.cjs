'use strict'
// taskpoint is an ES module. Node can require() ES modules since 20.19 and 22.12 (and always on
// 24); these CommonJS entry points hand require('taskpoint') over to it there, and elsewhere say
// plainly what to do instead of Node's ERR_PACKAGE_PATH_NOT_EXPORTED.
module.exports = function load(file, name) {
  try {
    return require(file)
  } catch (e) {
    if (!e || (e.code !== 'ERR_REQUIRE_ESM' && e.code !== 'ERR_REQUIRE_ASYNC_MODULE')) throw e
    const err = new Error(
      `${name} is an ES module and this Node (${process.version}) cannot require() it` +
        `${process.execArgv.includes('--no-experimental-require-module') ? ' (--no-experimental-require-module is set)' : ''}: ` +
        `use \`import ... from '${name}'\` or \`const m = await import('${name}')\`, or run Node >= 20.19 / 22.12`,
      { cause: e },
    )
    err.code = 'ERR_TASKPOINT_REQUIRE_ESM'
    throw err
  }
}
