package leaks

import (
	"fmt"
	"regexp"

	"github.com/keyplane/keyplane/internal/apikey"
)

// TokenType is the secret type to register with GitHub's secret scanning
// partner program; GitHub sends it back as each entry's "type".
const TokenType = "keyplane_api_key"

// ScanningPattern is the regular expression to register with a scanner
// for keys with prefix: the prefix, "_", then the key's base62 body and
// checksum (apikey.BodyLen + apikey.ChecksumLen characters), bounded so
// that a longer run of base62 characters or a longer prefix does not
// match. It is derived from internal/apikey's format, so it changes with
// it (docs/operations.md quotes it; a test keeps the two in step).
func ScanningPattern(prefix string) string {
	return fmt.Sprintf(`(?:\A|[^0-9A-Za-z_])(%s_[0-9A-Za-z]{%d})(?:[^0-9A-Za-z]|\z)`,
		regexp.QuoteMeta(prefix), apikey.BodyLen+apikey.ChecksumLen)
}
