//go:build unix

package filevault

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lock takes an exclusive, non-blocking flock on "<path>.lock", creating
// it with mode 0600. The lock lives on a file of its own because the vault
// file is replaced on every write.
func lock(path string) (unlock func() error, err error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("vault: %s is %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("vault: lock %s: %w", f.Name(), err)
	}
	return f.Close, nil // closing the descriptor releases the lock
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
