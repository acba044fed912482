'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/engines.js'), 'taskpoint/engines')
