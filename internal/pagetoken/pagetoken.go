package pagetoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// position is what a token encodes.
type position struct {
	T  time.Time `json:"t"`
	ID string    `json:"i"`
}

// Encode returns the token of the position (t, id).
func Encode(t time.Time, id string) string {
	b, _ := json.Marshal(position{t, id}) // cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the position token encodes. The error is errs.Invalid
// ("invalid page token") if token is not one Encode returns, if its id is
// empty, or if valid, when not nil, rejects the id.
func Decode(token string, valid func(id string) bool) (time.Time, string, error) {
	var p position
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	switch {
	case err != nil:
	case p.ID == "":
		err = errors.New("no id")
	case valid != nil && !valid(p.ID):
		err = errors.New("bad id")
	}
	if err != nil {
		return time.Time{}, "", errs.Wrap(errs.Invalid, err, "invalid page token")
	}
	return p.T, p.ID, nil
}
