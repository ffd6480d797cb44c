//go:build !unix

package coordcli

// dirPermissions: access here is the ACL's, which coord does not read.
func dirPermissions(string) (warn, fix string) { return "", "" }

// permissionsOK says what was not checked.
func permissionsOK(dir string) string { return dir + ": access control lists not checked on this OS" }
