'use strict';
// The destinations screen: see app.js for App.
