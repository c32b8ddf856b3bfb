package admin

// ParseCursor is parseCursor, for the fuzz test of the admin_test package.
var ParseCursor = parseCursor
