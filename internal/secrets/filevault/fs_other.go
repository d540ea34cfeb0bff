//go:build !unix

package filevault

// lock is a no-op where flock(2) does not exist: there, only one process
// may open a vault at a time, and nothing enforces it.
func lock(string) (unlock func() error, err error) { return func() error { return nil }, nil }

// syncDir is a no-op where directories cannot be fsynced.
func syncDir(string) error { return nil }
