'use strict';
// The quality screen: see app.js for App.
