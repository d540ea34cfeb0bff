# The deployment's named secrets, "<prefix><name>" in Secret Manager (key
# secrets, "<prefix>key-<key id>", are created by the Keys function, never
# here). The functions' builders (internal/wire) read them at start-up and
# refuse to start without the pepper and an admin token.
#
# The first version of each is generated here. Terraform keeps generated
# values in its state, so the state bucket must be protected like the
# secrets themselves. Later versions (rotation, docs/operations.md) are
# added outside Terraform; Terraform neither sees nor removes them, and
# ignores its own version being disabled.

resource "google_secret_manager_secret" "named" {
  for_each = toset(["pepper", "admin-token", "webhook-secret", "verify-token"])

  project   = var.project_id
  secret_id = "${var.name_prefix}${each.key}"
  labels = {
    app = "keyplane"
  }

  replication {
    auto {}
  }

  # Losing the pepper makes every issued key unverifiable, for good. To tear
  # a test deployment down, remove this block first.
  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.enabled]
}

# The HMAC key of the stored key hashes (apikey.NewHasher needs 32 bytes or
# more): 64 base62 characters, about 380 bits. Never rotated by replacing
# this resource: a new pepper invalidates every key's stored hash.
resource "random_password" "pepper" {
  length  = 64
  special = false

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_secret_manager_secret_version" "pepper" {
  secret      = google_secret_manager_secret.named["pepper"].id
  secret_data = random_password.pepper.result

  lifecycle {
    ignore_changes = [enabled]
  }
}

# A bearer token of the management API, in the format `keyplane serve`
# generates. Read it with
#   gcloud secrets versions access latest --secret=<prefix>admin-token
resource "random_password" "admin_token" {
  length  = 40
  special = false
}

resource "google_secret_manager_secret_version" "admin_token" {
  secret      = google_secret_manager_secret.named["admin-token"].id
  secret_data = "kpadm_${random_password.admin_token.result}"

  lifecycle {
    ignore_changes = [enabled]
  }
}

# The bearer token gateways verify keys with: accepted on POST /v1/verify
# only (KEYPLANE_VERIFY_TOKENS), so a gateway holding it cannot manage keys.
# Read it with
#   gcloud secrets versions access latest --secret=<prefix>verify-token
resource "random_password" "verify_token" {
  length  = 40
  special = false
}

resource "google_secret_manager_secret_version" "verify_token" {
  secret      = google_secret_manager_secret.named["verify-token"].id
  secret_data = "kpvfy_${random_password.verify_token.result}"

  lifecycle {
    ignore_changes = [enabled]
  }
}

# The usage webhook's Standard Webhooks secret: "whsec_" and the base64 of
# 32 random bytes. Gateways that sign usage reports need it.
resource "random_bytes" "webhook_secret" {
  length = 32
}

resource "google_secret_manager_secret_version" "webhook_secret" {
  secret      = google_secret_manager_secret.named["webhook-secret"].id
  secret_data = "whsec_${random_bytes.webhook_secret.base64}"

  lifecycle {
    ignore_changes = [enabled]
  }
}

# The plans file, when one is given: a secret only because Secret Manager
# volumes are how a file reaches every function unchanged (functions.tf
# mounts it and points KEYPLANE_PLANS at it). A new file is a new version;
# instances started after the apply read it.
locals {
  plans_enabled   = var.plans_file != null
  plans_mount_dir = "/etc/keyplane-plans"
  plans_file_name = can(regex("\\.ya?ml$", var.plans_file)) ? "plans.yaml" : "plans.json" # plan.Load decides by the name
  plans_env       = local.plans_enabled ? { KEYPLANE_PLANS = "${local.plans_mount_dir}/${local.plans_file_name}" } : {}

  # Every named secret this configuration manages, by name.
  named_secret_ids = merge(
    { for name, s in google_secret_manager_secret.named : name => s.id },
    local.plans_enabled ? { plans = google_secret_manager_secret.plans[0].id } : {},
  )

  # (function, secret) pairs: each function reads its named_secrets, and
  # every function reads the plans file when there is one.
  fn_named_secrets = merge([
    for name, f in local.functions : {
      for secret in concat(f.named_secrets, local.plans_enabled ? ["plans"] : []) :
      "${name} ${secret}" => { function = name, secret = secret }
    }
  ]...)
}

resource "google_secret_manager_secret" "plans" {
  count = local.plans_enabled ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}plans"
  labels = {
    app = "keyplane"
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "plans" {
  count = local.plans_enabled ? 1 : 0

  secret      = google_secret_manager_secret.plans[0].id
  secret_data = file(var.plans_file)
}

# Resource-level grants: a function can read the named secrets it lists and
# no other secret.
resource "google_secret_manager_secret_iam_member" "fn" {
  for_each = local.fn_named_secrets

  project   = var.project_id
  secret_id = local.named_secret_ids[each.value.secret]
  role      = google_project_iam_custom_role.this["named_secret_reader"].name
  member    = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}
