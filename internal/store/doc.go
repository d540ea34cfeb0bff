// Package store defines keyplane's datastore contract: API-key records, the
// hash → key lookup, provisioning intents, idempotency records and the
// audit log. Adapters live in subpackages (sqlitestore for the embedded
// default, firestorestore for production) and all pass the conformance
// suite in storetest. Adapters translate backend errors into errs kinds.
package store
