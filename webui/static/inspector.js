'use strict';
// The inspector screen: see app.js for App.
