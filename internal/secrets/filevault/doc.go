// Package filevault is the embedded secrets.Vault of `keyplane serve`: every
// secret in one AES-256-GCM encrypted file.
//
// # File format (version 1)
//
//	offset  size  content
//	0       8     magic "KPVAULT\x00"
//	8       1     format version (1)
//	9       12    random GCM nonce
//	21      rest  AES-256-GCM(master key, nonce, JSON document, AAD = bytes 0..8)
//
// The whole vault is one JSON document sealed as one GCM blob. Every
// mutation seals the document again under a fresh random nonce and replaces
// the file atomically (write a temporary file in the same directory with
// mode 0600, fsync, rename, fsync the directory), so a crash leaves either
// the old or the new vault, never a torn one, and no plaintext ever reaches
// the disk. With random 96-bit nonces one master key is good for 2^32
// writes (NIST SP 800-38D), far beyond a local deployment's lifetime.
//
// Opening the file with the wrong master key, or a truncated or altered
// file, fails with ErrWrongKey rather than returning garbage: GCM
// authenticates the header and the document.
//
// # Concurrency
//
// A Vault is safe for concurrent use. Only one Vault may have a file open
// at a time: Open takes an exclusive flock(2) on "<path>.lock" (on Unix)
// and fails if another process, or another Vault in this process, holds it.
//
// The master key comes from LoadOrCreateKey: a file holding the key as 64
// hex digits, created with mode 0600 in a 0700 directory on first use.
package filevault
