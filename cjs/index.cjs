'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/index.js'), 'taskpoint')
