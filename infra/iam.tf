# Identities and grants. Each function runs as its own service account and
# gets only what its code calls; no function holds a basic role (owner,
# editor) or a project-wide admin role. Per function (see local.functions):
#
#   keys           datastore.user; creates key secrets (project-level, see
#                  below) and manages them (conditioned on "<prefix>key-");
#                  reads the pepper and the admin token
#   verify         datastore.viewer; reads the pepper and the admin token;
#                  cannot read any key's secret
#   usage-webhook  publishes to the usage topic; reads the webhook secret
#   record-usage   datastore.user
#   sweep          datastore.user; disables/enables key secret versions and
#                  deletes abandoned key secrets (conditioned); publishes to
#                  the notifications topic; reads the pepper and the admin token
#
# Resource-level grants (topics, secrets, Cloud Run services) live next to
# their resources: pubsub.tf, secrets.tf, functions.tf.

resource "google_service_account" "fn" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "${var.name_prefix}${each.key}"
  display_name = "keyplane ${each.value.entry_point} function"
  description  = each.value.description

  depends_on = [google_project_service.enabled]
}

# Pub/Sub signs the push subscription's OIDC tokens as this account; it may
# invoke the record-usage function and nothing else.
resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}pubsub-push"
  display_name = "keyplane Pub/Sub push to RecordUsage"

  depends_on = [google_project_service.enabled]
}

# Cloud Scheduler signs the sweep job's OIDC tokens as this account; it may
# invoke the sweep function and nothing else.
resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}scheduler"
  display_name = "keyplane Cloud Scheduler to Sweep"

  depends_on = [google_project_service.enabled]
}

# Builds the functions' images, instead of the project's default compute
# service account (which holds Editor in older projects and nothing in
# newer ones).
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}build"
  display_name = "keyplane function builds"

  depends_on = [google_project_service.enabled]
}

# The role Cloud Functions documents for a custom build service account:
# read the uploaded source, write build logs and push the image to the
# gcf-artifacts repository.
resource "google_project_iam_member" "build" {
  project = var.project_id
  role    = "roles/cloudbuild.builds.builder"
  member  = "serviceAccount:${google_service_account.build.email}"
}

# Projects created before April 2021 need this for Pub/Sub to mint the
# push subscription's OIDC tokens; it is scoped to the one push account.
resource "google_service_account_iam_member" "pubsub_push_token_creator" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

locals {
  # Custom roles with exactly the Secret Manager permissions that
  # pkg/secrets/secretmanager/doc.go lists for the methods each function
  # calls (the Go test in this directory checks them against that list).
  custom_roles = {
    # CreateKeySecret's secretmanager.secrets.create. IAM checks this
    # permission on the parent project, where a resource.name condition
    # cannot see the id of the secret being created, so this role is
    # granted unconditioned: the Keys account can create a secret of any id
    # in the project. Creating a secret grants no access to it, so this
    # reaches no secret outside the "<prefix>key-" condition below.
    key_secret_creator = {
      role_id          = "KeySecretCreator"
      title            = "keyplane key secret creator"
      description      = "Create Secret Manager secrets (keyplane key secrets)."
      key_secrets_only = false
      permissions = [
        "secretmanager.secrets.create",
      ]
    }

    # The rest of CreateKeySecret (add version 1; get it on a retry;
    # destroy the loser's version in a race), KeySecret (reveal),
    # SetKeySecretEnabled, DestroyKeySecret and DeleteKeySecret.
    key_secret_manager = {
      role_id          = "KeySecretManager"
      title            = "keyplane key secret manager"
      description      = "Manage keyplane key secrets and their versions."
      key_secrets_only = true
      permissions = [
        "secretmanager.secrets.delete",
        "secretmanager.versions.access",
        "secretmanager.versions.add",
        "secretmanager.versions.destroy",
        "secretmanager.versions.disable",
        "secretmanager.versions.enable",
        "secretmanager.versions.get",
      ]
    }

    # The sweep: SetKeySecretEnabled when it disables or re-enables a key,
    # and DeleteKeySecret when it reaps an abandoned provisioning intent
    # (keys.Service.ReapAbandoned). It can never read a key's plaintext.
    key_secret_sweeper = {
      role_id          = "KeySecretSweeper"
      title            = "keyplane key secret sweeper"
      description      = "Disable, enable and delete keyplane key secrets without reading them."
      key_secrets_only = true
      permissions = [
        "secretmanager.secrets.delete",
        "secretmanager.versions.disable",
        "secretmanager.versions.enable",
        "secretmanager.versions.get",
      ]
    }

    # Secret (access "latest", list versions when latest is not enabled)
    # and SecretVersions (every enabled admin token): the predefined
    # secretAccessor role lacks versions.list. Granted on individual
    # secrets only (secrets.tf), never on the project.
    named_secret_reader = {
      role_id          = "NamedSecretReader"
      title            = "keyplane deployment secret reader"
      description      = "Read the enabled versions of one keyplane deployment secret."
      key_secrets_only = false
      permissions = [
        "secretmanager.versions.access",
        "secretmanager.versions.list",
      ]
    }
  }

  # The condition of every key_secrets_only grant. Caveats:
  # - resource.name carries the project NUMBER, not its id;
  # - it matches secrets and their versions ("…/secrets/<id>/versions/<n>")
  #   whose id starts with "<prefix>key-", so a second deployment in the
  #   same project must not use a name_prefix that starts with this one's
  #   "<prefix>key-";
  # - it cannot restrict secretmanager.secrets.create (see key_secret_creator).
  key_secret_condition = {
    title       = "${var.name_prefix}key secrets only"
    description = "Only Secret Manager secrets whose id starts with ${var.name_prefix}key-, and their versions."
    expression  = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${var.name_prefix}key-\")"
  }

  fn_project_roles = merge([
    for name, f in local.functions : {
      for role in f.project_roles : "${name} ${role}" => { function = name, role = role }
    }
  ]...)

  fn_key_secret_roles = merge([
    for name, f in local.functions : {
      for role in f.key_secret_roles : "${name} ${role}" => { function = name, role = role }
    }
  ]...)
}

resource "google_project_iam_custom_role" "this" {
  for_each = local.custom_roles

  project     = var.project_id
  role_id     = "${local.role_prefix}${each.value.role_id}"
  title       = each.value.title
  description = each.value.description
  permissions = each.value.permissions

  depends_on = [google_project_service.enabled]
}

# Firestore access. Datastore roles cannot be granted on a database, only
# on the project (a resource.name condition can narrow them to one
# database; not done here because a deployment owns its project's database).
resource "google_project_iam_member" "fn_project_roles" {
  for_each = local.fn_project_roles

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

resource "google_project_iam_member" "fn_key_secret_roles" {
  for_each = local.fn_key_secret_roles

  project = var.project_id
  role    = google_project_iam_custom_role.this[each.value.role].name
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"

  dynamic "condition" {
    for_each = local.custom_roles[each.value.role].key_secrets_only ? [local.key_secret_condition] : []
    content {
      title       = condition.value.title
      description = condition.value.description
      expression  = condition.value.expression
    }
  }
}
