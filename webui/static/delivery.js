'use strict';
// The delivery screen: see app.js for App.
