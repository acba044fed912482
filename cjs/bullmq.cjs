'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/integrations/bullmq/index.js'), 'taskpoint/bullmq')
