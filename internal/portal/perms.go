package portal

import "slices"

// Portal permissions: what an owner may do in a portal session.
const (
	PermKeysRead   = "keys:read"   // list and view its keys
	PermKeysCreate = "keys:create" // create a key (its secret shown once)
	PermKeysRoll   = "keys:roll"   // roll a key: a new secret, the old one kept for a grace period
	PermKeysRevoke = "keys:revoke" // revoke a key
	PermUsageRead  = "usage:read"  // usage charts, limits and what remains of them, spend
)

// Permissions lists every portal permission.
var permissions = []string{PermKeysRead, PermKeysCreate, PermKeysRoll, PermKeysRevoke, PermUsageRead}

// Permissions returns every portal permission's name.
func Permissions() []string { return slices.Clone(permissions) }

// DefaultPermissions are a session's when the request names none: read
// only.
func DefaultPermissions() []string { return []string{PermKeysRead, PermUsageRead} }

// permSet is a session's permissions.
type permSet []string

func (s permSet) has(p string) bool { return slices.Contains(s, p) }
