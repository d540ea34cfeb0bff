// Package clientips remembers which client IPs each key is used from: the
// verify path reports every sighting to a Recorder, which keeps the
// distinct IPs per key and UTC day in memory and flushes new ones to a
// Writer (the ledger, or the usage topic on the way to it). The sweep's
// distinct-IP rule reads them back from the ledger.
package clientips
