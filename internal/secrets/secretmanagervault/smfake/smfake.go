package smfake

import (
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxPayload is the largest secret payload the service accepts.
const MaxPayload = 64 << 10

const (
	defaultPageSize = 25
	maxPageSize     = 25000
)

var (
	projectRE   = regexp.MustCompile(`^projects/[^/]+$`)
	secretRE    = regexp.MustCompile(`^projects/[^/]+/secrets/[^/]+$`)
	versionRE   = regexp.MustCompile(`^(projects/[^/]+/secrets/[^/]+)/versions/([^/]+)$`)
	secretIDRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	labelKeyRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	labelValRE  = regexp.MustCompile(`^[a-z0-9_-]{0,63}$`)
	annotKeyRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	stateFilter = regexp.MustCompile(`^\s*state\s*[:=]\s*(\w+)\s*$`)
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// Server is the fake service. Its zero value is not usable; call NewServer.
type Server struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer

	mu      sync.Mutex
	secrets map[string]*secret // by resource name
	faults  map[string][]fault // by method name, oldest first
}

type secret struct {
	meta     *secretmanagerpb.Secret
	versions []*version // versions[i] is version i+1
}

type version struct {
	meta *secretmanagerpb.SecretVersion
	data []byte
	crc  int64
}

type fault struct {
	code  codes.Code
	after bool // fail after the call took effect
}

var _ secretmanagerpb.SecretManagerServiceServer = (*Server)(nil)

// NewServer returns an empty fake. Serve it with Register, or use Start.
func NewServer() *Server {
	return &Server{secrets: map[string]*secret{}, faults: map[string][]fault{}}
}

// Register registers s on g, with the interceptor that injects faults.
// g must have been created with grpc.UnaryInterceptor(s.Interceptor).
func (s *Server) Register(g *grpc.Server) {
	secretmanagerpb.RegisterSecretManagerServiceServer(g, s)
}

// Start serves a new fake on a loopback port until t ends, and returns it
// with the client options that connect the real client to it:
//
//	srv, opts := smfake.Start(t)
//	client, err := secretmanager.NewClient(ctx, opts...)
func Start(t testing.TB) (*Server, []option.ClientOption) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smfake: listen: %v", err)
	}
	s := NewServer()
	g := grpc.NewServer(grpc.UnaryInterceptor(s.Interceptor))
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return s, []option.ClientOption{
		option.WithEndpoint(lis.Addr().String()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

// FailNext makes the next call of method (e.g. "AddSecretVersion") fail
// with code before it has any effect. Calls queue: FailNext twice fails
// the next two calls.
func (s *Server) FailNext(method string, code codes.Code) { s.addFault(method, fault{code: code}) }

// LoseNextResponse makes the next call of method take effect and then fail
// with UNAVAILABLE, as when the response is lost on its way back.
func (s *Server) LoseNextResponse(method string) {
	s.addFault(method, fault{code: codes.Unavailable, after: true})
}

func (s *Server) addFault(method string, f fault) {
	if !slices.ContainsFunc(secretmanagerpb.SecretManagerService_ServiceDesc.Methods, func(m grpc.MethodDesc) bool {
		return m.MethodName == method
	}) {
		panic(fmt.Sprintf("smfake: no method %q in SecretManagerService", method))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = append(s.faults[method], f)
}

// Interceptor injects the faults queued by FailNext and LoseNextResponse.
func (s *Server) Interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	s.mu.Lock()
	f, ok := fault{}, len(s.faults[method]) > 0
	if ok {
		f, s.faults[method] = s.faults[method][0], s.faults[method][1:]
	}
	s.mu.Unlock()
	if !ok {
		return handler(ctx, req)
	}
	if f.after {
		if _, err := handler(ctx, req); err != nil {
			return nil, err
		}
	}
	return nil, status.Errorf(f.code, "smfake: injected %v on %s", f.code, method)
}

// CreateSecret implements the RPC.
func (s *Server) CreateSecret(_ context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	if !projectRE.MatchString(req.GetParent()) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid parent %q", req.GetParent())
	}
	if !secretIDRE.MatchString(req.GetSecretId()) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid secret id %q: want [A-Za-z0-9_-]{1,255}", req.GetSecretId())
	}
	in := req.GetSecret()
	if in.GetReplication().GetReplication() == nil {
		return nil, status.Error(codes.InvalidArgument, "secret.replication is required")
	}
	if err := checkLabels(in.GetLabels()); err != nil {
		return nil, err
	}
	if err := checkAnnotations(in.GetAnnotations()); err != nil {
		return nil, err
	}
	name := req.GetParent() + "/secrets/" + req.GetSecretId()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.secrets[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", name)
	}
	meta := &secretmanagerpb.Secret{
		Name:        name,
		Replication: in.GetReplication(),
		CreateTime:  timestamppb.Now(),
		Labels:      in.GetLabels(),
		Annotations: in.GetAnnotations(),
	}
	s.secrets[name] = &secret{meta: meta}
	return proto.Clone(meta).(*secretmanagerpb.Secret), nil
}

func checkLabels(labels map[string]string) error {
	if len(labels) > 64 {
		return status.Errorf(codes.InvalidArgument, "%d labels; at most 64 are allowed", len(labels))
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) {
			return status.Errorf(codes.InvalidArgument, "invalid label key %q", k)
		}
		if !labelValRE.MatchString(v) {
			return status.Errorf(codes.InvalidArgument, "invalid value %q of label %q", v, k)
		}
	}
	return nil
}

func checkAnnotations(annotations map[string]string) error {
	size := 0
	for k, v := range annotations {
		if !annotKeyRE.MatchString(k) {
			return status.Errorf(codes.InvalidArgument, "invalid annotation key %q", k)
		}
		size += len(k) + len(v)
	}
	if size >= 16<<10 {
		return status.Errorf(codes.InvalidArgument, "annotations total %d bytes; the limit is 16KiB", size)
	}
	return nil
}

// GetSecret implements the RPC.
func (s *Server) GetSecret(_ context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secret(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(sec.meta).(*secretmanagerpb.Secret), nil
}

// DeleteSecret implements the RPC.
func (s *Server) DeleteSecret(_ context.Context, req *secretmanagerpb.DeleteSecretRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.secret(req.GetName()); err != nil {
		return nil, err
	}
	delete(s.secrets, req.GetName())
	return &emptypb.Empty{}, nil
}

// AddSecretVersion implements the RPC.
func (s *Server) AddSecretVersion(_ context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	p := req.GetPayload()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "payload is required")
	}
	if len(p.GetData()) > MaxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "payload is %d bytes; the limit is 64KiB", len(p.GetData()))
	}
	crc := int64(crc32.Checksum(p.GetData(), castagnoli))
	if p.DataCrc32C != nil && p.GetDataCrc32C() != crc {
		return nil, status.Error(codes.InvalidArgument, "data_crc32c does not match the payload: data corruption detected")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secret(req.GetParent())
	if err != nil {
		return nil, err
	}
	meta := &secretmanagerpb.SecretVersion{
		Name:                           fmt.Sprintf("%s/versions/%d", sec.meta.GetName(), len(sec.versions)+1),
		CreateTime:                     timestamppb.Now(),
		State:                          secretmanagerpb.SecretVersion_ENABLED,
		ClientSpecifiedPayloadChecksum: p.DataCrc32C != nil,
	}
	sec.versions = append(sec.versions, &version{meta: meta, data: slices.Clone(p.GetData()), crc: crc})
	return proto.Clone(meta).(*secretmanagerpb.SecretVersion), nil
}

// GetSecretVersion implements the RPC.
func (s *Server) GetSecretVersion(_ context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(v.meta).(*secretmanagerpb.SecretVersion), nil
}

// AccessSecretVersion implements the RPC.
func (s *Server) AccessSecretVersion(_ context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetName())
	if err != nil {
		return nil, err
	}
	if st := v.meta.GetState(); st != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %v state.", v.meta.GetName(), st)
	}
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    v.meta.GetName(),
		Payload: &secretmanagerpb.SecretPayload{Data: slices.Clone(v.data), DataCrc32C: proto.Int64(v.crc)},
	}, nil
}

// EnableSecretVersion implements the RPC.
func (s *Server) EnableSecretVersion(_ context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.transition(req.GetName(), secretmanagerpb.SecretVersion_ENABLED)
}

// DisableSecretVersion implements the RPC.
func (s *Server) DisableSecretVersion(_ context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.transition(req.GetName(), secretmanagerpb.SecretVersion_DISABLED)
}

// DestroySecretVersion implements the RPC.
func (s *Server) DestroySecretVersion(_ context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.transition(req.GetName(), secretmanagerpb.SecretVersion_DESTROYED)
}

// transition moves a version to state to; DESTROYED is final.
func (s *Server) transition(name string, to secretmanagerpb.SecretVersion_State) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(name)
	if err != nil {
		return nil, err
	}
	if v.meta.GetState() == secretmanagerpb.SecretVersion_DESTROYED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in DESTROYED state.", v.meta.GetName())
	}
	v.meta.State = to
	if to == secretmanagerpb.SecretVersion_DESTROYED {
		v.meta.DestroyTime = timestamppb.Now()
		clear(v.data)
		v.data = nil
	}
	return proto.Clone(v.meta).(*secretmanagerpb.SecretVersion), nil
}

// ListSecretVersions implements the RPC.
func (s *Server) ListSecretVersions(_ context.Context, req *secretmanagerpb.ListSecretVersionsRequest) (*secretmanagerpb.ListSecretVersionsResponse, error) {
	var want secretmanagerpb.SecretVersion_State
	if f := req.GetFilter(); f != "" {
		var st int32
		if m := stateFilter.FindStringSubmatch(f); m != nil {
			st = secretmanagerpb.SecretVersion_State_value[strings.ToUpper(m[1])]
		}
		if st == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "smfake supports only state:<STATE> filters, not %q", f)
		}
		want = secretmanagerpb.SecretVersion_State(st)
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "negative page_size %d", size)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "invalid page_token %q", tok)
		}
		start = n
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.secret(req.GetParent())
	if err != nil {
		return nil, err
	}
	var all []*secretmanagerpb.SecretVersion
	for _, v := range slices.Backward(sec.versions) {
		if want == 0 || v.meta.GetState() == want {
			all = append(all, v.meta)
		}
	}
	resp := &secretmanagerpb.ListSecretVersionsResponse{TotalSize: int32(len(all))}
	end := min(start+size, len(all))
	for _, v := range all[min(start, end):end] {
		resp.Versions = append(resp.Versions, proto.Clone(v).(*secretmanagerpb.SecretVersion))
	}
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

// secret returns the secret named name. s.mu must be held.
func (s *Server) secret(name string) (*secret, error) {
	if !secretRE.MatchString(name) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid secret name %q", name)
	}
	sec, ok := s.secrets[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found.", name)
	}
	return sec, nil
}

// version resolves a version name, "latest" included. s.mu must be held.
func (s *Server) version(name string) (*version, error) {
	m := versionRE.FindStringSubmatch(name)
	if m == nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid secret version name %q", name)
	}
	sec, err := s.secret(m[1])
	if err != nil {
		return nil, err
	}
	if m[2] == "latest" {
		if len(sec.versions) == 0 {
			return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", m[1])
		}
		return sec.versions[len(sec.versions)-1], nil
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n < 1 || n > len(sec.versions) {
		return nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
	}
	return sec.versions[n-1], nil
}
