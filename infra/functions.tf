# The Cloud Functions (gen2), one per entry of local.functions, all built
# from one archive of the module root: the Go buildpack builds the package
# at the root of the source (register.go), which registers every function;
# build_config.entry_point picks one.

locals {
  # What the archive leaves out: everything the root package does not
  # import. Keep in step with /.gcloudignore (the Go test checks both, and
  # that no package the root package imports is excluded).
  source_excludes = [
    ".ci",
    ".git",
    ".gcloudignore",
    ".gitignore",
    ".keyplane",
    "cmd",
    "docs",
    "infra",
    "scripts",
    "internal/race",
    "internal/testenv",
    "internal/secrets/secretmanagervault/smfake",
    "internal/secrets/secretstest",
    "internal/store/storetest",
    "**/testdata",
    "**/*_test.go",
  ]
}

resource "google_storage_bucket" "source" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}function-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # holds build inputs only; old archives can be deleted at will
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.enabled]
}

data "archive_file" "source" {
  type             = "zip"
  source_dir       = "${path.module}/.."
  output_path      = "${path.module}/.build/source.zip"
  output_file_mode = "0644" # the same bytes, hence the same object name, on every machine
  excludes         = local.source_excludes
}

# Named by content: a change to the source is a new object, which makes
# every function rebuild; an unchanged source leaves them alone.
resource "google_storage_bucket_object" "source" {
  bucket = google_storage_bucket.source.name
  name   = "source/${data.archive_file.source.output_sha256}.zip"
  source = data.archive_file.source.output_path
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}${each.key}"
  description = each.value.description
  labels = {
    app      = "keyplane"
    function = each.key
  }

  build_config {
    runtime         = "go126"
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.fn[each.key].email
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    max_instance_request_concurrency = each.value.concurrency
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    timeout_seconds                  = each.value.timeout_seconds
    all_traffic_on_latest_revision   = true

    # Reachable from the internet; who may call is decided by the
    # roles/run.invoker grants below and, behind them, by keyplane's own
    # bearer-token, webhook-signature or page sign-in check. Sweep, RecordUsage and
    # DeliverNotification are called only by Cloud Scheduler and Pub/Sub,
    # which Cloud Run counts as internal traffic in the same project:
    # ALLOW_INTERNAL_ONLY would narrow them further once that has been
    # checked on a real deployment.
    ingress_settings = "ALLOW_ALL"

    environment_variables = merge(local.common_env, local.plans_env, each.value.env)

    # Verify reaches the shared limiter's private address through the VPC
    # connector, for private ranges only (redis.tf).
    vpc_connector                 = each.key == "verify" && local.shared_limiter ? google_vpc_access_connector.limiter[0].id : null
    vpc_connector_egress_settings = each.key == "verify" && local.shared_limiter ? "PRIVATE_RANGES_ONLY" : null

    dynamic "secret_environment_variables" {
      for_each = each.key == "verify" && local.shared_limiter ? [1] : []
      content {
        key        = "KEYPLANE_REDIS_AUTH"
        project_id = var.project_id
        secret     = google_secret_manager_secret.redis_auth[0].secret_id
        version    = "latest"
      }
    }

    dynamic "secret_environment_variables" {
      for_each = each.key == "export-stripe" && local.stripe_export ? [1] : []
      content {
        key        = "KEYPLANE_STRIPE_API_KEY"
        project_id = var.project_id
        secret     = google_secret_manager_secret.stripe_api_key[0].secret_id
        version    = "latest"
      }
    }

    dynamic "secret_volumes" {
      for_each = local.plans_enabled ? [1] : []
      content {
        mount_path = local.plans_mount_dir
        project_id = var.project_id
        secret     = google_secret_manager_secret.plans[0].secret_id

        versions {
          version = "latest"
          path    = local.plans_file_name
        }
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.fn_project_roles,
    google_project_iam_member.fn_key_secret_roles,
    google_project_iam_member.fn_owner_webhook_secret_roles,
    google_secret_manager_secret_iam_member.fn,
    google_secret_manager_secret_version.pepper,
    google_secret_manager_secret_version.admin_token,
    google_secret_manager_secret_version.webhook_secret,
    google_secret_manager_secret_version.plans,
    google_secret_manager_secret_iam_member.verify_redis_auth,
    google_secret_manager_secret_version.redis_auth,
    google_secret_manager_secret_iam_member.export_stripe_api_key,
    google_secret_manager_secret_version.stripe_api_key,
  ]
}

locals {
  # (function, invoker) pairs. Keyed by position: members may be unknown
  # until apply (service account emails), keys must not be.
  fn_invokers = merge([
    for name, f in local.functions : {
      for i, member in f.invokers : "${name} ${i}" => { function = name, member = member }
    }
  ]...)
}

# Who may call each function: a gen2 function is a Cloud Run service, and
# Cloud Run checks roles/run.invoker on it before the request reaches
# keyplane. Callers put their Google ID token (audience: the function's URL)
# in X-Serverless-Authorization when keyplane's own bearer token occupies
# Authorization; Cloud Run then leaves Authorization to keyplane.
resource "google_cloud_run_v2_service_iam_member" "fn_invoker" {
  for_each = local.fn_invokers

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.value.function].name
  role     = "roles/run.invoker"
  member   = each.value.member
}
