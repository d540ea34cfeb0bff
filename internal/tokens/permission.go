package tokens

import (
	"slices"
	"strings"
)

// Permission is one thing a caller may do. Each route needs exactly one.
type Permission uint8

// Permissions. The zero Permission is none: a route that needs it is a
// route nobody assigned a permission to.
const (
	None           Permission = iota
	KeysCreate                // POST /v1/keys
	KeysRead                  // GET /v1/keys, GET /v1/keys/{id}
	KeysUpdate                // PATCH /v1/keys/{id}
	KeysDisable               // disable and re-enable a key
	KeysRevoke                // revoke a key
	KeysRotate                // rotate a key (a new secret for it)
	KeysReveal                // read a key's plaintext
	Verify                    // POST /v1/verify
	UsageRead                 // usage of keys and owners, dead letters
	AuditRead                 // GET /v1/audit
	OwnersRead                // GET /v1/owners…, an owner's webhook
	OwnersWrite               // PATCH an owner, PUT its webhook
	SweepRun                  // POST /v1/sweep
	TokensManage              // mint, list and revoke caller tokens
	PortalSessions            // open owner-portal sessions
	BillingWrite              // grant an owner prepaid credits; never scoped to an owner
	numPermissions
)

var permissionNames = [numPermissions]string{
	None: "", KeysCreate: "keys:create", KeysRead: "keys:read", KeysUpdate: "keys:update",
	KeysDisable: "keys:disable", KeysRevoke: "keys:revoke", KeysRotate: "keys:rotate", KeysReveal: "keys:reveal",
	Verify: "verify", UsageRead: "usage:read", AuditRead: "audit:read", OwnersRead: "owners:read",
	OwnersWrite: "owners:write", SweepRun: "sweep:run", TokensManage: "tokens:manage", PortalSessions: "portal:sessions",
	BillingWrite: "billing:write",
}

// String returns the permission's name, like "keys:create".
func (p Permission) String() string {
	if p >= numPermissions {
		return ""
	}
	return permissionNames[p]
}

// ParsePermission returns the permission called name.
func ParsePermission(name string) (Permission, bool) {
	for p := KeysCreate; p < numPermissions; p++ {
		if permissionNames[p] == name {
			return p, true
		}
	}
	return None, false
}

// Names returns every permission's name, in declaration order.
func Names() []string { return slices.Clone(permissionNames[1:]) }

// Set is a set of permissions.
type Set uint32

// All holds every permission: the admin token's.
const All Set = 1<<numPermissions - 2

// SetOf returns the set holding ps.
func SetOf(ps ...Permission) Set {
	var s Set
	for _, p := range ps {
		if p != None && p < numPermissions {
			s |= 1 << p
		}
	}
	return s
}

// Has reports whether s holds p. No set holds None.
func (s Set) Has(p Permission) bool { return p != None && p < numPermissions && s&(1<<p) != 0 }

// Names returns the names of the permissions in s, sorted.
func (s Set) Names() []string {
	var out []string
	for p := KeysCreate; p < numPermissions; p++ {
		if s.Has(p) {
			out = append(out, permissionNames[p])
		}
	}
	slices.Sort(out)
	return out
}

// parseSet parses permission names; unknown lists those it does not know.
func parseSet(names []string) (s Set, unknown []string) {
	for _, n := range names {
		p, ok := ParsePermission(n)
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		s |= SetOf(p)
	}
	return s, unknown
}

// String lists the names in s, comma-separated.
func (s Set) String() string { return strings.Join(s.Names(), ",") }

// Set returns the set holding p alone.
func (p Permission) Set() Set {
	if p == None || p >= numPermissions {
		return 0
	}
	return 1 << p
}
