'use strict';
// The sources screen: see app.js for App.
