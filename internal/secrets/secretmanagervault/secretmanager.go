package secretmanagervault

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"strings"
	"time"

	sm "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets"
)

// QuotaRetryAfter is the RetryAfter of the errors returned when Secret
// Manager answers RESOURCE_EXHAUSTED: its quotas are per minute.
const QuotaRetryAfter = 60 * time.Second

// Label and annotation names of key secrets.
const (
	LabelKeyID = "keyplane-key-id"
	LabelOwner = "keyplane-owner"
)

const keyPrefix = "key-"

var (
	idRE       = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Options configures a Vault. The zero value is valid.
type Options struct {
	// Prefix is prepended to every secret id, e.g. "keyplane-", so that one
	// project can host several deployments. Characters [A-Za-z0-9_-].
	// Default: "".
	Prefix string
}

// Vault stores secrets in Secret Manager.
type Vault struct {
	client  *sm.Client
	owned   bool   // Close closes client
	project string // "projects/<id>"
	prefix  string
}

var _ secrets.Vault = (*Vault)(nil)

// New connects to Secret Manager in projectID. Close closes the client.
func New(ctx context.Context, projectID string, opts Options, clientOpts ...option.ClientOption) (*Vault, error) {
	if err := validate(projectID, opts); err != nil {
		return nil, err
	}
	c, err := sm.NewClient(ctx, clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("secretmanager: new client: %w", err)
	}
	v, _ := NewFromClient(c, projectID, opts)
	v.owned = true
	return v, nil
}

// NewFromClient returns a Vault over c, which the caller keeps and closes.
func NewFromClient(c *sm.Client, projectID string, opts Options) (*Vault, error) {
	if err := validate(projectID, opts); err != nil {
		return nil, err
	}
	return &Vault{client: c, project: "projects/" + projectID, prefix: opts.Prefix}, nil
}

func validate(projectID string, opts Options) error {
	if projectID == "" || strings.Contains(projectID, "/") {
		return fmt.Errorf("secretmanager: invalid project id %q", projectID)
	}
	if !idRE.MatchString(opts.Prefix) || len(opts.Prefix) > 100 {
		return fmt.Errorf("secretmanager: invalid prefix %q: want at most 100 of [A-Za-z0-9_-]", opts.Prefix)
	}
	return nil
}

// secretName returns the resource name of secret id prefix+id.
func (v *Vault) secretName(id string) (string, error) {
	id = v.prefix + id
	if id == "" || len(id) > 255 || !idRE.MatchString(id) {
		return "", errs.E(errs.Invalid, "%q is not a valid secret id", id)
	}
	return v.project + "/secrets/" + id, nil
}

func (v *Vault) keySecretName(keyID string) (string, error) {
	if keyID == "" {
		return "", errs.E(errs.Invalid, "empty key id")
	}
	return v.secretName(keyPrefix + keyID)
}

func (v *Vault) namedSecretName(name string) (string, error) {
	if strings.HasPrefix(name, keyPrefix) {
		return "", errs.E(errs.Invalid, "secret names starting with %q are reserved for keys", keyPrefix)
	}
	return v.secretName(name)
}

// classify translates a Secret Manager error into an errs kind. msg is the
// client-safe message of the NotFound, Exists and FailedPrecondition kinds;
// the others get a fixed one.
func classify(err error, msg string) error {
	var kind errs.Kind
	switch code := status.Code(err); {
	case code == codes.NotFound:
		kind = errs.NotFound
	case code == codes.AlreadyExists:
		kind = errs.Exists
	case code == codes.FailedPrecondition:
		kind = errs.FailedPrecondition
	case code == codes.ResourceExhausted:
		return &errs.Error{Kind: errs.Unavailable, Msg: "secret store over its write quota; retry later", RetryAfter: QuotaRetryAfter, Err: err}
	case code == codes.Unavailable, code == codes.DeadlineExceeded, code == codes.Canceled,
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		kind, msg = errs.Unavailable, "secret store unavailable"
	default:
		kind, msg = errs.Internal, "secret store error"
	}
	return errs.Wrap(kind, err, msg)
}

func payload(data []byte) *secretmanagerpb.SecretPayload {
	return &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: proto.Int64(int64(crc32.Checksum(data, castagnoli)))}
}

// access returns the payload of version name, checking its checksum.
func (v *Vault) access(ctx context.Context, name string) ([]byte, error) {
	resp, err := v.client.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name})
	if err != nil {
		return nil, err
	}
	p := resp.GetPayload()
	if p.DataCrc32C != nil && p.GetDataCrc32C() != int64(crc32.Checksum(p.GetData(), castagnoli)) {
		return nil, errs.E(errs.Internal, "secret payload failed its checksum")
	}
	return p.GetData(), nil
}

// versionState returns the state of version name, or 0 if it cannot tell.
func (v *Vault) versionState(ctx context.Context, name string) secretmanagerpb.SecretVersion_State {
	sv, err := v.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name})
	if err != nil {
		return secretmanagerpb.SecretVersion_STATE_UNSPECIFIED
	}
	return sv.GetState()
}

// CreateKeySecret implements secrets.Vault.
func (v *Vault) CreateKeySecret(ctx context.Context, ref secrets.KeyRef, plaintext []byte) error {
	name, err := v.keySecretName(ref.KeyID)
	if err != nil {
		return err
	}
	exists := errs.E(errs.Exists, "key %s already has a secret", ref.KeyID)
	_, err = v.client.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent:   v.project,
		SecretId: name[strings.LastIndexByte(name, '/')+1:],
		Secret: &secretmanagerpb.Secret{
			Replication: &secretmanagerpb.Replication{
				Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}},
			},
			Labels:      map[string]string{LabelKeyID: labelValue(ref.KeyID), LabelOwner: labelValue(ref.Owner)},
			Annotations: map[string]string{LabelKeyID: ref.KeyID, LabelOwner: ref.Owner},
		},
	})
	switch {
	case status.Code(err) == codes.AlreadyExists:
		// A retry, a concurrent create, or the completion of a create that
		// crashed before adding its version.
		_, err := v.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name + "/versions/1"})
		if err == nil {
			return exists
		}
		if status.Code(err) != codes.NotFound {
			return classify(err, "key secret lookup failed")
		}
	case err != nil:
		return classify(err, "key secret not created")
	}
	sv, err := v.client.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: payload(plaintext)})
	if err != nil {
		return classify(err, "key secret not created")
	}
	if sv.GetName() != name+"/versions/1" {
		// A concurrent create added version 1 first: the key is its. Ours
		// is never read; destroying it is only tidiness.
		v.client.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: sv.GetName()})
		return exists
	}
	return nil
}

// KeySecret implements secrets.Vault.
func (v *Vault) KeySecret(ctx context.Context, keyID string) ([]byte, error) {
	name, err := v.keySecretName(keyID)
	if err != nil {
		return nil, err
	}
	data, err := v.access(ctx, name+"/versions/1")
	switch status.Code(err) {
	case codes.OK:
		return data, nil
	case codes.NotFound:
		return nil, classify(err, fmt.Sprintf("key %s has no secret", keyID))
	case codes.FailedPrecondition:
		return nil, classify(err, fmt.Sprintf("the secret of key %s is disabled or destroyed", keyID))
	default:
		return nil, classify(err, "")
	}
}

// SetKeySecretEnabled implements secrets.Vault.
func (v *Vault) SetKeySecretEnabled(ctx context.Context, keyID string, enabled bool) error {
	name, err := v.keySecretName(keyID)
	if err != nil {
		return err
	}
	version := name + "/versions/1"
	want := secretmanagerpb.SecretVersion_DISABLED
	if enabled {
		_, err = v.client.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: version})
		want = secretmanagerpb.SecretVersion_ENABLED
	} else {
		_, err = v.client.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: version})
	}
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return classify(err, fmt.Sprintf("key %s has no secret", keyID))
	case codes.FailedPrecondition:
		if v.versionState(ctx, version) == want {
			return nil // already so, on a service that refuses no-op transitions
		}
		return classify(err, fmt.Sprintf("the secret of key %s is destroyed", keyID))
	default:
		return classify(err, "")
	}
}

// DestroyKeySecret implements secrets.Vault.
func (v *Vault) DestroyKeySecret(ctx context.Context, keyID string) error {
	name, err := v.keySecretName(keyID)
	if err != nil {
		return err
	}
	version := name + "/versions/1"
	_, err = v.client.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: version})
	switch status.Code(err) {
	case codes.OK, codes.NotFound:
		return nil
	case codes.FailedPrecondition:
		if v.versionState(ctx, version) == secretmanagerpb.SecretVersion_DESTROYED {
			return nil
		}
		return classify(err, fmt.Sprintf("the secret of key %s cannot be destroyed", keyID))
	default:
		return classify(err, "")
	}
}

// DeleteKeySecret implements secrets.Vault.
func (v *Vault) DeleteKeySecret(ctx context.Context, keyID string) error {
	name, err := v.keySecretName(keyID)
	if err != nil {
		return err
	}
	err = v.client.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name})
	if err == nil || status.Code(err) == codes.NotFound {
		return nil
	}
	return classify(err, "")
}

// Secret implements secrets.Vault.
func (v *Vault) Secret(ctx context.Context, name string) ([]byte, error) {
	sname, err := v.namedSecretName(name)
	if err != nil {
		return nil, err
	}
	data, err := v.access(ctx, sname+"/versions/latest")
	switch status.Code(err) {
	case codes.OK:
		return data, nil
	case codes.FailedPrecondition: // the newest version is not enabled
		vs, err := v.enabledVersions(ctx, name, sname, 1)
		if err != nil {
			return nil, err
		}
		return vs[0], nil
	default:
		return nil, classify(err, fmt.Sprintf("no secret %q", name))
	}
}

// AddSecretVersion implements secrets.Vault.
func (v *Vault) AddSecretVersion(ctx context.Context, name string, value []byte) error {
	sname, err := v.namedSecretName(name)
	if err != nil {
		return err
	}
	req := &secretmanagerpb.AddSecretVersionRequest{Parent: sname, Payload: payload(value)}
	_, err = v.client.AddSecretVersion(ctx, req)
	if status.Code(err) == codes.NotFound {
		_, err = v.client.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
			Parent:   v.project,
			SecretId: sname[strings.LastIndexByte(sname, '/')+1:],
			Secret: &secretmanagerpb.Secret{
				Replication: &secretmanagerpb.Replication{
					Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}},
				},
			},
		})
		if err == nil || status.Code(err) == codes.AlreadyExists {
			_, err = v.client.AddSecretVersion(ctx, req)
		}
	}
	if err != nil {
		return classify(err, fmt.Sprintf("secret %q not stored", name))
	}
	return nil
}

// SecretVersions implements secrets.Vault.
func (v *Vault) SecretVersions(ctx context.Context, name string) ([][]byte, error) {
	sname, err := v.namedSecretName(name)
	if err != nil {
		return nil, err
	}
	return v.enabledVersions(ctx, name, sname, -1)
}

// enabledVersions returns up to limit (all if negative) enabled versions
// of secret sname, newest first; NotFound if there are none.
func (v *Vault) enabledVersions(ctx context.Context, name, sname string, limit int) ([][]byte, error) {
	notFound := fmt.Sprintf("no secret %q", name)
	it := v.client.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{
		Parent: sname,
		Filter: "state:ENABLED",
	})
	var out [][]byte
	for len(out) != limit {
		sv, err := it.Next() // newest first, as the API documents
		if err == iterator.Done {
			break
		}
		if err != nil {
			return nil, classify(err, notFound)
		}
		data, err := v.access(ctx, sv.GetName())
		switch status.Code(err) {
		case codes.OK:
			out = append(out, data)
		case codes.FailedPrecondition, codes.NotFound:
			// disabled or destroyed since the listing
		default:
			return nil, classify(err, notFound)
		}
	}
	if len(out) == 0 {
		return nil, errs.E(errs.NotFound, "%s", notFound)
	}
	return out, nil
}

// Close closes the client if New created it.
func (v *Vault) Close() error {
	if v.owned {
		return v.client.Close()
	}
	return nil
}

// labelValue maps s into the label alphabet: lowercase, [a-z0-9_-], at
// most 63 characters.
func labelValue(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if b.Len() == 63 {
			break
		}
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
