package httpapi

// OwnerScopeOf says how route rt keeps an owner-scoped token to its
// owner: "key" ({id} names a key), "owner" ({owner} names one), "handler"
// (the handler filters) or "none" (scoped tokens are refused).
func OwnerScopeOf(rt Route) string {
	return [...]string{scopeNone: "none", scopeKey: "key", scopeOwner: "owner", scopeHandler: "handler"}[ownerScoped(rt.Method+" "+rt.Path)]
}
