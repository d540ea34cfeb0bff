package smfake_test

import (
	"bytes"
	"testing"

	sm "cloud.google.com/go/secretmanager/apiv1"
	pb "cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/secrets/secretmanagervault/smfake"
)

const secret = "projects/p/secrets/s"

func start(t *testing.T) (*smfake.Server, *sm.Client) {
	t.Helper()
	srv, opts := smfake.Start(t)
	c, err := sm.NewClient(t.Context(), opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

func create(t *testing.T, c *sm.Client) error {
	t.Helper()
	_, err := c.CreateSecret(t.Context(), &pb.CreateSecretRequest{
		Parent:   "projects/p",
		SecretId: "s",
		Secret:   &pb.Secret{Replication: &pb.Replication{Replication: &pb.Replication_Automatic_{Automatic: &pb.Replication_Automatic{}}}},
	})
	return err
}

func add(t *testing.T, c *sm.Client, data string) string {
	t.Helper()
	v, err := c.AddSecretVersion(t.Context(), &pb.AddSecretVersionRequest{Parent: secret, Payload: &pb.SecretPayload{Data: []byte(data)}})
	if err != nil {
		t.Fatalf("AddSecretVersion: %v", err)
	}
	return v.GetName()
}

func access(t *testing.T, c *sm.Client, name string) ([]byte, error) {
	t.Helper()
	r, err := c.AccessSecretVersion(t.Context(), &pb.AccessSecretVersionRequest{Name: name})
	return r.GetPayload().GetData(), err
}

func TestVersionLifecycleFollowsTheService(t *testing.T) {
	_, c := start(t)
	ctx := t.Context()
	_, err := c.AddSecretVersion(ctx, &pb.AddSecretVersionRequest{Parent: secret, Payload: &pb.SecretPayload{Data: []byte("x")}})
	wantCode(t, "AddSecretVersion to a missing secret", err, codes.NotFound)
	if err := create(t, c); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	wantCode(t, "second CreateSecret", create(t, c), codes.AlreadyExists)
	_, err = access(t, c, secret+"/versions/latest")
	wantCode(t, "access latest without versions", err, codes.NotFound)

	if got, want := add(t, c, "one"), secret+"/versions/1"; got != want {
		t.Errorf("first version = %q, want %q", got, want)
	}
	if got, want := add(t, c, "two"), secret+"/versions/2"; got != want {
		t.Errorf("second version = %q, want %q", got, want)
	}
	if got, err := access(t, c, secret+"/versions/latest"); err != nil || string(got) != "two" {
		t.Errorf("access latest = %q, %v; want %q, nil", got, err, "two")
	}

	v2 := secret + "/versions/2"
	for range 2 { // disabling is idempotent
		if _, err := c.DisableSecretVersion(ctx, &pb.DisableSecretVersionRequest{Name: v2}); err != nil {
			t.Fatalf("DisableSecretVersion: %v", err)
		}
	}
	_, err = access(t, c, secret+"/versions/latest")
	wantCode(t, "access latest when it is disabled", err, codes.FailedPrecondition)

	for range 2 {
		_, err = c.DestroySecretVersion(ctx, &pb.DestroySecretVersionRequest{Name: v2})
	}
	wantCode(t, "second DestroySecretVersion", err, codes.FailedPrecondition)
	_, err = c.EnableSecretVersion(ctx, &pb.EnableSecretVersionRequest{Name: v2})
	wantCode(t, "EnableSecretVersion of a destroyed version", err, codes.FailedPrecondition)
	_, err = access(t, c, v2)
	wantCode(t, "access a destroyed version", err, codes.FailedPrecondition)

	it := c.ListSecretVersions(ctx, &pb.ListSecretVersionsRequest{Parent: secret, Filter: "state:ENABLED"})
	var names []string
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatalf("ListSecretVersions: %v", err)
		}
		names = append(names, v.GetName())
	}
	if len(names) != 1 || names[0] != secret+"/versions/1" {
		t.Errorf("enabled versions = %q, want [%s/versions/1]", names, secret)
	}

	if err := c.DeleteSecret(ctx, &pb.DeleteSecretRequest{Name: secret}); err != nil {
		t.Fatalf("DeleteSecret: %v", err)
	}
	wantCode(t, "second DeleteSecret", c.DeleteSecret(ctx, &pb.DeleteSecretRequest{Name: secret}), codes.NotFound)
	if err := create(t, c); err != nil {
		t.Fatalf("CreateSecret after delete: %v", err)
	}
	if got, want := add(t, c, "again"), secret+"/versions/1"; got != want {
		t.Errorf("first version after recreate = %q, want %q", got, want)
	}
}

func TestInvalidRequestsAreRefused(t *testing.T) {
	_, c := start(t)
	ctx := t.Context()
	if err := create(t, c); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	_, err := c.AddSecretVersion(ctx, &pb.AddSecretVersionRequest{Parent: secret, Payload: &pb.SecretPayload{Data: make([]byte, smfake.MaxPayload+1)}})
	wantCode(t, "payload over 64 KiB", err, codes.InvalidArgument)
	bad := int64(1)
	_, err = c.AddSecretVersion(ctx, &pb.AddSecretVersionRequest{Parent: secret, Payload: &pb.SecretPayload{Data: []byte("x"), DataCrc32C: &bad}})
	wantCode(t, "wrong data_crc32c", err, codes.InvalidArgument)
	_, err = c.ListSecretVersions(ctx, &pb.ListSecretVersionsRequest{Parent: secret, Filter: "name:foo"}).Next()
	wantCode(t, "unsupported filter", err, codes.InvalidArgument)
	_, err = c.CreateSecret(ctx, &pb.CreateSecretRequest{
		Parent:   "projects/p",
		SecretId: "t",
		Secret: &pb.Secret{
			Replication: &pb.Replication{Replication: &pb.Replication_Automatic_{Automatic: &pb.Replication_Automatic{}}},
			Labels:      map[string]string{"owner": "Alice@example.com"},
		},
	})
	wantCode(t, "invalid label value", err, codes.InvalidArgument)
	_, err = c.CreateSecret(ctx, &pb.CreateSecretRequest{Parent: "projects/p", SecretId: "u", Secret: &pb.Secret{}})
	wantCode(t, "no replication", err, codes.InvalidArgument)
}

func TestFaultsAreInjected(t *testing.T) {
	srv, c := start(t)
	srv.FailNext("CreateSecret", codes.ResourceExhausted)
	wantCode(t, "CreateSecret after FailNext", create(t, c), codes.ResourceExhausted)
	if err := create(t, c); err != nil {
		t.Fatalf("CreateSecret after the fault: %v", err)
	}

	srv.LoseNextResponse("AddSecretVersion")
	_, err := c.AddSecretVersion(t.Context(), &pb.AddSecretVersionRequest{Parent: secret, Payload: &pb.SecretPayload{Data: []byte("kept")}})
	wantCode(t, "AddSecretVersion after LoseNextResponse", err, codes.Unavailable)
	if got, err := access(t, c, secret+"/versions/1"); err != nil || !bytes.Equal(got, []byte("kept")) {
		t.Errorf("version 1 after a lost response = %q, %v; want %q, nil", got, err, "kept")
	}
}
