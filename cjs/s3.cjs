'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/src/storage/s3.js'), 'taskpoint/s3')
