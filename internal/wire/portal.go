package wire

import (
	"fmt"

	"github.com/keyplane/keyplane/internal/portal"
	"github.com/keyplane/keyplane/internal/store"
)

// ownerPortal builds the owner portal (POST /v1/portal/sessions and the
// pages under /portal/) on the store's portal links, the key and owner
// services and the ledger; its sessions are signed with the pepper, and
// its links name cfg.PortalURL (the Faces function's URL in production).
func (b *build) ownerPortal() {
	if b.err != nil {
		return
	}
	a := b.app
	links, ok := a.Store.(store.PortalLinks)
	if !ok {
		b.err = fmt.Errorf("wire: the %T store keeps no portal links", a.Store)
		return
	}
	b.srv.Portal = &portal.Portal{Links: links, Keys: a.Keys, Owners: a.Owners, Ledger: a.Ledger, Plans: a.Plans,
		Hasher: b.hasher, Clock: b.clk, Logger: b.log, BaseURL: b.cfg.PortalURL}
}
