'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/storage/index.js'), 'taskpoint/storage')
