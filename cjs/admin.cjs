'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/admin.js'), 'taskpoint/admin')
