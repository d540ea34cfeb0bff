// Package apikey owns the format of keyplane's API keys: generating them,
// parsing them without I/O, and computing the keyed lookup hash that is the
// only form of a key the datastore ever sees.
//
// A key reads <prefix>_<body><checksum>, like GitHub's tokens:
//
//	kp_live_2dCnw8Vq0pYf7KxT3mRb9LzA1sHjE6uN  4fG9qZ
//	└prefix┘└──── 32 base62 chars, 190 bits ────┘└crc32┘
//
// The prefix names the environment (kp_live, kp_test). The checksum is the
// CRC32 (IEEE) of everything before it, as 6 base62 digits, so a typo or a
// truncated paste is rejected by Parse alone, before any cache or datastore
// work (its cost: docs/benchmarks.md, "1. Parsing and hashing a key"). The
// stored lookup value is HMAC-SHA256(pepper, key).
package apikey
