// Package smfake is an in-process fake of the Google Secret Manager API
// (google.cloud.secretmanager.v1) served over gRPC, for tests that drive
// the real Go client: no Secret Manager emulator exists.
//
// It implements the RPCs keyplane calls (CreateSecret, GetSecret,
// DeleteSecret, AddSecretVersion, GetSecretVersion, AccessSecretVersion,
// ListSecretVersions, EnableSecretVersion, DisableSecretVersion,
// DestroySecretVersion) with the service's documented semantics:
//
//   - CreateSecret fails with ALREADY_EXISTS for an existing id, and with
//     INVALID_ARGUMENT for an invalid id, a missing replication policy, or
//     labels and annotations the service would reject (labels are checked
//     against the ASCII subset of the documented pattern).
//   - Versions are numbered 1, 2, 3… per secret; a deleted and recreated
//     secret starts again at 1.
//   - "latest" is the most recently created version, whatever its state, as
//     the API reference says and the service does: accessing it while it is
//     disabled or destroyed fails with FAILED_PRECONDITION, it does not fall
//     back to an older enabled version. With no versions it is NOT_FOUND.
//   - AccessSecretVersion of a DISABLED or DESTROYED version fails with
//     FAILED_PRECONDITION ("Secret Version [...] is in DISABLED state.").
//   - Enabling an enabled version or disabling a disabled one succeeds;
//     enabling, disabling or destroying a DESTROYED version fails with
//     FAILED_PRECONDITION. Destroy clears the payload.
//   - AddSecretVersion on a missing secret is NOT_FOUND; a payload over
//     64 KiB, or one whose data_crc32c does not match, is INVALID_ARGUMENT.
//   - ListSecretVersions lists newest first, pages (25 per page by
//     default), and supports the filters "state:ENABLED", "state:DISABLED"
//     and "state:DESTROYED" (also with "="); others are INVALID_ARGUMENT.
//
// Faults are injectable: FailNext makes the next call of a method fail
// before it takes effect, LoseNextResponse makes it take effect and then
// fail, as when a response is lost on the way back.
//
// Not modelled: IAM, etags, version aliases, delayed destruction, expiry,
// rotation, regional secrets, quotas (inject RESOURCE_EXHAUSTED instead).
package smfake
