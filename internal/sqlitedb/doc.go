// Package sqlitedb owns how keyplane's embedded adapters (the SQLite store
// and usage ledger, and the embedded queue) open and write a SQLite
// database file with modernc.org/sqlite, and how they classify its errors.
//
// A DB is two database/sql handles on one file. W is a single connection
// whose transactions begin IMMEDIATE, so every write is serialised in this
// process and read-modify-write transactions need no retries; a second
// process writing the same file waits up to busy_timeout (5 s) for the lock.
// R is a pool of read-only connections that, in WAL mode, never wait for
// the writer. For ":memory:" R is W, since every connection would open a
// new, empty database.
//
// Open brings the schema up to date from a list of migrations, recording
// the version in PRAGMA user_version, and refuses a database whose version
// is newer than the list. Translate maps database/sql and SQLite errors to
// errs kinds at the adapter boundary.
package sqlitedb
