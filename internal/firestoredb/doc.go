// Package firestoredb owns what keyplane's Firestore adapters (the key
// store, the usage ledger and the notification store) share about
// Firestore itself: how its gRPC errors become errs kinds at the adapter
// boundary (Translate), which strings can name a document (ValidID), how a
// time is stored (Time), and how a process queues its own transactions on
// one document instead of contending in Firestore (Locks).
//
// What the adapters do not share stays with them: each decides which kind
// contention becomes, as its own contract documents, and what to do with
// an id Firestore cannot store.
package firestoredb
