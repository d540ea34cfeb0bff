# Identities and grants. Each function runs as its own service account and
# gets only what its code calls; no function holds a basic role (owner,
# editor) or a project-wide admin role. Per function (see local.functions):
#
#   keys            datastore.user; creates key secrets (project-level, see
#                   below) and manages them (conditioned on "<prefix>key-");
#                   adds versions to owner webhook secrets (conditioned on
#                   "<prefix>owner-webhook-"); publishes to the notifications
#                   topic; reads the pepper and the admin token
#   verify          datastore.viewer; reads the pepper and the admin token;
#                   cannot read any key's secret
#   usage-webhook   publishes to the usage topic; reads the webhook secret
#   leak-reports    datastore.user; disables or destroys key secret versions
#                   (conditioned on "<prefix>key-"), never reads them;
#                   publishes to the notifications topic; reads the pepper
#   record-usage    datastore.user
#   deliver-notify  datastore.user; reads owner webhook secrets (conditioned
#                   on "<prefix>owner-webhook-"); publishes to the
#                   notifications topic (the next attempt of a delivery)
#   faces           datastore.user; creates key secrets (project-level) and
#                   manages their versions (conditioned on "<prefix>key-"),
#                   never deletes one; publishes to the notifications topic;
#                   reads the pepper and the admin token; public (allUsers
#                   invoker), the pages authenticate people themselves
#   sweep           datastore.user; disables/enables key secret versions and
#                   deletes abandoned key secrets (conditioned); publishes to
#                   the notifications topic; reads the pepper and the admin token
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

# Pub/Sub signs the push subscriptions' OIDC tokens as this account; it may
# invoke the record-usage and deliver-notify functions and nothing else.
# Each token's audience is the one function's URL, so a token minted for
# one subscription is not accepted by the other function.
resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}pubsub-push"
  display_name = "keyplane Pub/Sub push to RecordUsage and DeliverNotification"

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
  # internal/secrets/secretmanagervault/doc.go lists for the methods each function
  # calls (the Go test in this directory checks them against that list).
  # condition names the IAM condition every project-level grant of the role
  # carries (local.secret_conditions), or "none".
  custom_roles = {
    # secretmanager.secrets.create: CreateKeySecret's, and AddSecretVersion's
    # for the first version of an owner's webhook secret. IAM checks this
    # permission on the parent project, where a resource.name condition
    # cannot see the id of the secret being created, so this role is
    # granted unconditioned: the Keys account can create a secret of any id
    # in the project. Creating a secret grants no access to it, so this
    # reaches no secret outside the conditions below.
    key_secret_creator = {
      role_id     = "KeySecretCreator"
      title       = "keyplane key secret creator"
      description = "Create Secret Manager secrets (keyplane key and owner webhook secrets)."
      condition   = "none"
      permissions = [
        "secretmanager.secrets.create",
      ]
    }

    # The rest of CreateKeySecret (add version 1; get it on a retry;
    # destroy the loser's version in a race), KeySecret (reveal),
    # SetKeySecretEnabled, DestroyKeySecret and DeleteKeySecret.
    key_secret_manager = {
      role_id     = "KeySecretManager"
      title       = "keyplane key secret manager"
      description = "Manage keyplane key secrets and their versions."
      condition   = "key_secrets"
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

    # The console on the Faces function: CreateKeySecret (create and
    # rotate), KeySecret (a replayed create), SetKeySecretEnabled and
    # DestroyKeySecret (revoke). Unlike key_secret_manager, no
    # secrets.delete: only the sweep reaps abandoned secrets.
    key_secret_console = {
      role_id     = "KeySecretConsole"
      title       = "keyplane key secret console"
      description = "Create, read, disable, enable and destroy the versions of keyplane key secrets, without deleting a secret."
      condition   = "key_secrets"
      permissions = [
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
      role_id     = "KeySecretSweeper"
      title       = "keyplane key secret sweeper"
      description = "Disable, enable and delete keyplane key secrets without reading them."
      condition   = "key_secrets"
      permissions = [
        "secretmanager.secrets.delete",
        "secretmanager.versions.disable",
        "secretmanager.versions.enable",
        "secretmanager.versions.get",
      ]
    }

    # The leak reports: SetKeySecretEnabled when a leaked key is disabled,
    # DestroyKeySecret when it is revoked (keys.Service.Leaked). It can
    # never read a key's plaintext.
    key_secret_leak_stopper = {
      role_id     = "KeySecretLeakStopper"
      title       = "keyplane key secret leak stopper"
      description = "Disable or destroy the versions of leaked keyplane key secrets without reading them."
      condition   = "key_secrets"
      permissions = [
        "secretmanager.versions.destroy",
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
      role_id     = "NamedSecretReader"
      title       = "keyplane deployment secret reader"
      description = "Read the enabled versions of one keyplane deployment secret."
      condition   = "none"
      permissions = [
        "secretmanager.versions.access",
        "secretmanager.versions.list",
      ]
    }

    # AddSecretVersion on an owner's webhook signing secret: the Keys
    # function rotates it on every PUT /v1/owners/{owner}/webhook (the
    # secret's creation is key_secret_creator's). It can never read one.
    owner_webhook_secret_writer = {
      role_id     = "OwnerWebhookSecretWriter"
      title       = "keyplane owner webhook secret writer"
      description = "Add versions to keyplane owners' webhook signing secrets without reading them."
      condition   = "owner_webhook_secrets"
      permissions = [
        "secretmanager.versions.add",
      ]
    }

    # Secret and SecretVersions on an owner's webhook signing secret: the
    # DeliverNotification function signs with the version the webhook
    # names, which is the latest unless a PUT raced (internal/notify).
    owner_webhook_secret_reader = {
      role_id     = "OwnerWebhookSecretReader"
      title       = "keyplane owner webhook secret reader"
      description = "Read the enabled versions of keyplane owners' webhook signing secrets."
      condition   = "owner_webhook_secrets"
      permissions = [
        "secretmanager.versions.access",
        "secretmanager.versions.list",
      ]
    }
  }

  # The conditions of the conditioned grants, by the name custom roles use.
  # Caveats:
  # - resource.name carries the project NUMBER, not its id;
  # - each matches secrets and their versions ("…/secrets/<id>/versions/<n>")
  #   whose id starts with "<prefix>key-" (key secrets) or
  #   "<prefix>owner-webhook-" (owners' webhook signing secrets,
  #   internal/notify.SecretName), so a second deployment in the same project
  #   must not use a name_prefix that starts with one of those;
  # - they cannot restrict secretmanager.secrets.create (see key_secret_creator).
  secret_conditions = {
    key_secrets = {
      title       = "${var.name_prefix}key secrets only"
      description = "Only Secret Manager secrets whose id starts with ${var.name_prefix}key-, and their versions."
      expression  = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${var.name_prefix}key-\")"
    }
    owner_webhook_secrets = {
      title       = "${var.name_prefix}owner webhook secrets only"
      description = "Only Secret Manager secrets whose id starts with ${var.name_prefix}owner-webhook-, and their versions."
      expression  = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${var.name_prefix}owner-webhook-\")"
    }
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

  fn_owner_webhook_secret_roles = merge([
    for name, f in local.functions : {
      for role in f.owner_webhook_secret_roles : "${name} ${role}" => { function = name, role = role }
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
    for_each = local.custom_roles[each.value.role].condition == "none" ? [] : [local.secret_conditions[local.custom_roles[each.value.role].condition]]
    content {
      title       = condition.value.title
      description = condition.value.description
      expression  = condition.value.expression
    }
  }
}

resource "google_project_iam_member" "fn_owner_webhook_secret_roles" {
  for_each = local.fn_owner_webhook_secret_roles

  project = var.project_id
  role    = google_project_iam_custom_role.this[each.value.role].name
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"

  dynamic "condition" {
    for_each = local.custom_roles[each.value.role].condition == "none" ? [] : [local.secret_conditions[local.custom_roles[each.value.role].condition]]
    content {
      title       = condition.value.title
      description = condition.value.description
      expression  = condition.value.expression
    }
  }
}
