'use strict'
module.exports = require('./load.cjs')(require.resolve('../dist/integrations/tfjs/index.js'), 'taskpoint/tfjs')
