'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/storage/gcs.js'), 'taskpoint/gcs')
