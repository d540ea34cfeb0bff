package apikey

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"hash/crc32"
	"sync"
)

const (
	// BodyLen is the number of base62 characters of entropy: 32 × log2(62)
	// ≈ 190 bits, above the 160 bits the design requires.
	BodyLen = 32
	// ChecksumLen is the number of base62 digits of the CRC32 checksum
	// (62^6 > 2^32).
	ChecksumLen = 6
	// MaxPrefixLen bounds the prefix so that parsing has a fixed cost.
	MaxPrefixLen = 32
	// MaxLen is the longest well-formed key.
	MaxLen = MaxPrefixLen + 1 + BodyLen + ChecksumLen
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Errors returned by Parse and ValidatePrefix. They carry no part of the
// input, so they are safe to log and to show.
var (
	ErrMalformed   = errors.New("apikey: malformed key")
	ErrChecksum    = errors.New("apikey: checksum mismatch")
	ErrPrefix      = errors.New("apikey: prefix must be 1-32 chars of [a-z0-9_], start with a letter and not end with '_'")
	ErrShortPepper = errors.New("apikey: pepper must be at least 32 bytes")
)

// ValidatePrefix reports whether p can prefix keys.
func ValidatePrefix(p string) error {
	if len(p) == 0 || len(p) > MaxPrefixLen || p[0] < 'a' || p[0] > 'z' || p[len(p)-1] == '_' {
		return ErrPrefix
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return ErrPrefix
		}
	}
	return nil
}

// Generate returns a new key with the given prefix, drawing the body from
// crypto/rand.
func Generate(prefix string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	b := make([]byte, 0, len(prefix)+1+BodyLen+ChecksumLen)
	b = append(b, prefix...)
	b = append(b, '_')
	b = appendRandom(b, BodyLen)
	b = appendChecksum(b, crcString(string(b)))
	return string(b), nil
}

// RandomString returns n base62 characters from crypto/rand, for
// identifiers that must not be guessable.
func RandomString(n int) string { return string(appendRandom(make([]byte, 0, n), n)) }

// appendRandom appends n uniformly distributed base62 characters, using
// rejection sampling so that no character is more likely than another.
func appendRandom(b []byte, n int) []byte {
	var buf [64]byte
	for n > 0 {
		rand.Read(buf[:]) // never returns an error; crashes the program if the OS RNG fails
		for _, r := range buf {
			if r >= 62*4 { // 248..255 would bias the low characters
				continue
			}
			b = append(b, alphabet[r%62])
			n--
			if n == 0 {
				break
			}
		}
	}
	return b
}

func appendChecksum(b []byte, sum uint32) []byte {
	var d [ChecksumLen]byte
	for i := ChecksumLen - 1; i >= 0; i-- {
		d[i] = alphabet[sum%62]
		sum /= 62
	}
	return append(b, d[:]...)
}

var crcTable = crc32.MakeTable(crc32.IEEE)

// crcString is crc32.ChecksumIEEE without converting s to a []byte (which
// would allocate on the verify hot path).
func crcString(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crcTable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

// Parsed is a well-formed key split into its parts. Its fields are slices
// of the input; Parse allocates nothing.
type Parsed struct {
	Prefix string
	Body   string
}

// Parse checks that s is a well-formed key with a correct checksum. It does
// no I/O and allocates nothing.
func Parse(s string) (Parsed, error) {
	if len(s) > MaxLen || len(s) < 1+1+BodyLen+ChecksumLen {
		return Parsed{}, ErrMalformed
	}
	sep := len(s) - BodyLen - ChecksumLen - 1
	if s[sep] != '_' {
		return Parsed{}, ErrMalformed
	}
	prefix, rest := s[:sep], s[sep+1:]
	if ValidatePrefix(prefix) != nil {
		return Parsed{}, ErrMalformed
	}
	var sum uint64
	for i := 0; i < len(rest); i++ {
		v := base62Value(rest[i])
		if v < 0 {
			return Parsed{}, ErrMalformed
		}
		if i >= BodyLen {
			sum = sum*62 + uint64(v)
		}
	}
	if sum != uint64(crcString(s[:len(s)-ChecksumLen])) {
		return Parsed{}, ErrChecksum
	}
	return Parsed{Prefix: prefix, Body: rest[:BodyLen]}, nil
}

// base62Values maps a byte to its base62 value, or -1.
var base62Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

func base62Value(c byte) int { return int(base62Values[c]) }

// Last4 returns the last four characters of a key, shown to users to
// recognise it.
func Last4(key string) string {
	if len(key) < 4 {
		return ""
	}
	return key[len(key)-4:]
}

// Hash is the keyed lookup hash of a key: HMAC-SHA256(pepper, key).
type Hash [sha256.Size]byte

// String returns the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash decodes a hex hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, errors.New("apikey: hash must be 64 hex characters")
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err
}

// Hasher computes lookup hashes with one pepper. It is safe for concurrent
// use. It keeps keyed HMAC states in a pool, so that hashing a key costs one
// SHA-256 inner and outer block and no allocations, instead of a fresh
// hmac.New per key (docs/benchmarks.md, "1. Parsing and hashing a key").
type Hasher struct {
	pool sync.Pool
}

type hmacState struct {
	mac hash.Hash
	in  []byte // copy of the key, so Write does not need a []byte conversion
	out []byte
}

// NewHasher returns a Hasher for pepper, which must hold at least 32 bytes.
func NewHasher(pepper []byte) (*Hasher, error) {
	if len(pepper) < 32 {
		return nil, ErrShortPepper
	}
	p := append([]byte(nil), pepper...)
	h := &Hasher{}
	h.pool.New = func() any {
		return &hmacState{
			mac: hmac.New(sha256.New, p),
			in:  make([]byte, 0, MaxLen),
			out: make([]byte, 0, sha256.Size),
		}
	}
	return h, nil
}

// Sum returns HMAC-SHA256(pepper, key).
func (h *Hasher) Sum(key string) Hash {
	st := h.pool.Get().(*hmacState)
	st.mac.Reset()
	st.in = append(st.in[:0], key...)
	st.mac.Write(st.in)
	st.out = st.mac.Sum(st.out[:0])
	var sum Hash
	copy(sum[:], st.out)
	if cap(st.in) <= 4*MaxLen { // do not keep a huge buffer from an odd input
		h.pool.Put(st)
	}
	return sum
}
