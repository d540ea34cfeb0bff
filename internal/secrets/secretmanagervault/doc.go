// Package secretmanagervault is the Google Secret Manager adapter of
// secrets.Vault, over the official Go client.
//
// # Mapping
//
// Every secret id starts with Options.Prefix, so that one project can host
// several deployments.
//
//   - A key's secret is "<prefix>key-<keyID>", with automatic replication,
//     labels keyplane-key-id and keyplane-owner (sanitized to the label
//     alphabet, lowercase [a-z0-9_-], 63 characters) and the exact values in
//     annotations of the same names. Its plaintext is version 1, always:
//     KeySecret accesses "versions/1", never "latest", and so does every
//     lifecycle call. Version 1 is what makes creation linearizable: when
//     concurrent CreateKeySecret calls, or a retry after a crash between
//     CreateSecret and AddSecretVersion, add several versions, the service
//     numbers them, the caller that added version 1 wins and the others
//     destroy their own version and return Exists. A deleted and recreated
//     secret starts again at version 1.
//   - A named deployment secret is "<prefix><name>"; names starting with
//     "key-" are reserved. Secret accesses "latest", which in Secret
//     Manager is the most recently created version whatever its state; if
//     that one is disabled or destroyed, Secret falls back to the newest
//     ENABLED version from ListSecretVersions.
//
// # Errors
//
// gRPC codes become errs kinds at this boundary: NOT_FOUND → NotFound,
// ALREADY_EXISTS → Exists, FAILED_PRECONDITION → FailedPrecondition,
// RESOURCE_EXHAUSTED → Unavailable with RetryAfter (Secret Manager allows
// 600 writes per minute per project, which bounds provisioning
// throughput), UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED → Unavailable;
// everything else, PERMISSION_DENIED and UNAUTHENTICATED included, is
// Internal: a deployment bug, not the client's. Plaintext never appears in
// an error. Secret Manager refuses a destroy or an enable of a destroyed
// version with FAILED_PRECONDITION; the adapter reads the version's state
// to turn a repeated destroy or a repeated enable/disable into success, as
// the contract says.
//
// # IAM
//
// Permissions each method needs, on the deployment's secrets (grant them
// with an IAM condition on resource.name starting with
// "projects/<project>/secrets/<prefix>"):
//
//	CreateKeySecret      secretmanager.secrets.create, secretmanager.versions.add,
//	                     secretmanager.versions.get (on a retry),
//	                     secretmanager.versions.destroy (when it loses a race)
//	KeySecret            secretmanager.versions.access
//	SetKeySecretEnabled  secretmanager.versions.enable, secretmanager.versions.disable,
//	                     secretmanager.versions.get
//	DestroyKeySecret     secretmanager.versions.destroy, secretmanager.versions.get
//	DeleteKeySecret      secretmanager.secrets.delete
//	Secret               secretmanager.versions.access,
//	                     secretmanager.versions.list (when latest is not enabled)
//	AddSecretVersion     secretmanager.versions.add, secretmanager.secrets.create (first version)
//	SecretVersions       secretmanager.versions.list, secretmanager.versions.access
//
// Tests run the real client against smfake, an in-process fake of the API.
package secretmanagervault
