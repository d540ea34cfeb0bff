// Package pagetoken owns the format of the page tokens of the store and
// usage ledger adapters: the position of a page's last item, a time and an
// id (a zero time where only the id orders the list), as unpadded
// base64url JSON. The format is opaque to clients but shared by every
// backend, so it must only change compatibly.
package pagetoken
