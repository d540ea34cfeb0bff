# keyplane on Google Cloud: every resource of one deployment.
#
#   functions.tf   the Cloud Functions (gen2), their source archive and who may invoke them
#   iam.tf         one service account per function, custom roles, project-level grants
#   secrets.tf     the pepper, admin token, webhook secret (and plans) in Secret Manager
#   firestore.tf   the database, its composite indexes, TTL policies and index exemptions
#   pubsub.tf      usage and notification topics, dead letters, the push subscriptions
#   scheduler.tf   the Cloud Scheduler job that runs the sweep
#   redis.tf       the shared limiter (Memorystore, opt-in) and Verify's VPC connector
#   stripe.tf      the Stripe usage export (opt-in): its subscription, dead letters and API key secret
#
# The function set is the map local.functions below: adding a function is
# one entry (its entry point must be registered in register.go; the Go test
# in this directory fails on any drift between the two).
#
# Deploy (cloudbuild.yaml does this on every build of the main branch):
#
#   terraform -chdir=infra init -backend-config=bucket=<state bucket>
#   terraform -chdir=infra apply -var project_id=<project> [-var region=<region>]
#
# The deployer (Cloud Build's service account, or a person) needs to enable
# services, create service accounts, custom roles and IAM bindings, act as
# the service accounts it attaches (iam.serviceAccounts.actAs), and create
# the functions, topics, secrets, Firestore database and scheduler job.
# Those grants are made once, outside this configuration.
#
# Offline checks (no credentials, no provider downloads): `go test ./infra/`
# parses every file, checks `terraform fmt` formatting, the function set
# against register.go, the environment every function needs, dead-letter
# policies and the push subscriptions' retry policies against internal/wire, the
# Secret Manager permissions against internal/secrets/secretmanagervault/doc.go, the
# deploy source's excludes and the absence of owner/editor/admin roles.
# `terraform fmt -check -recursive infra` agrees with the formatting check.
# Only a real plan and apply show the rest: that the provider accepts every
# argument, that the APIs accept the values (runtime go126, IAM condition
# syntax), that the grants suffice at run time (the conditions on key and
# owner webhook secrets, the Pub/Sub and Scheduler OIDC tokens) and that the
# functions start.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Every Cloud Function of keyplane. The key is the function's short name
  # (its resource names are "<name_prefix><key>"); the attributes:
  #
  #   entry_point       the name registered in register.go (functions.HTTP / functions.CloudEvent)
  #   memory, cpu       per instance; concurrency > 1 needs cpu >= 1
  #   concurrency       requests one instance serves at once
  #   min/max_instances scaling bounds
  #   timeout_seconds   request timeout
  #   invokers          IAM members given roles/run.invoker on the function's Cloud Run service
  #   project_roles     predefined roles granted on the project (Firestore access)
  #   key_secret_roles  custom roles (local.custom_roles) on the "<prefix>key-*" secrets
  #   owner_webhook_secret_roles
  #                     custom roles on the owners' webhook signing secrets,
  #                     "<prefix>owner-webhook-*" (internal/notify.SecretName)
  #   named_secrets     deployment secrets the function reads at start-up (secrets.tf):
  #                     what its builder in internal/wire (roles.go) reads, and nothing more
  #   publishes_to      topics (local.topic_names) the function publishes to
  #   env               environment on top of local.common_env
  functions = {
    # The management API: provisioning from signup flows, lifecycle, reveal,
    # audit, owner webhooks. It writes key records, hash lookups, audit
    # entries, idempotency records, owner webhooks and notification records
    # (datastore.user), creates each key's secret, adds and destroys its
    # version, reveals it, and deletes abandoned ones; it adds a version to
    # an owner's webhook signing secret on every PUT of the webhook (never
    # reads one), and publishes key.disabled / key.enabled notifications.
    keys = {
      entry_point                = "Keys"
      description                = "keyplane management API: /v1/keys, /v1/audit, /v1/owners/{owner}/webhook"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 20
      min_instances              = 0
      max_instances              = 10
      timeout_seconds            = 60
      invokers                   = var.keys_invokers
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = ["key_secret_creator", "key_secret_manager"]
      owner_webhook_secret_roles = ["owner_webhook_secret_writer"]
      named_secrets              = ["pepper", "admin-token"]
      publishes_to               = ["notifications"]
      # The links POST /v1/portal/sessions returns open on the Faces
      # function (the pages are not served here).
      env = {
        KEYPLANE_PORTAL_URL = local.faces_url
      }
    }

    # The pages people open in a browser: the operator console (/console)
    # and the owner portal (/portal/); no /v1 route (internal/wire.Faces).
    # Public at the Cloud Run layer because a browser cannot present a
    # Google ID token: the console signs operators in with an admin or
    # caller token (session cookie and CSRF token), the portal admits owners
    # through single-use links. The console creates, rotates, disables,
    # enables and revokes keys (datastore.user; key secrets without
    # deleting one, which only the sweep's reaping does) and publishes their
    # notifications; it sets no owner webhook, so it holds no owner webhook
    # secret role, and it reads neither the webhook secret nor the verify
    # token.
    faces = {
      entry_point                = "Faces"
      description                = "keyplane operator console and owner portal: /console, /portal/"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 20
      min_instances              = 0
      max_instances              = 5
      timeout_seconds            = 60
      invokers                   = ["allUsers"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = ["key_secret_creator", "key_secret_console"]
      owner_webhook_secret_roles = []
      named_secrets              = ["pepper", "admin-token"]
      publishes_to               = ["notifications"]
      env                        = {}
    }

    # The hot path: reads key records and usage counters, never writes to
    # Firestore, and never reads a key's secret (it looks keys up by their
    # peppered hash). The client IPs it sees (for the sweep's distinct-IPs
    # rule) go to the usage topic, which RecordUsage writes to Firestore:
    # publishing is the least privilege that records them.
    verify = {
      entry_point                = "Verify"
      description                = "keyplane key verification: /v1/verify"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 80
      min_instances              = var.verify_min_instances
      max_instances              = 100
      timeout_seconds            = 10
      invokers                   = var.public_verify ? ["allUsers"] : var.verify_invokers
      project_roles              = ["roles/datastore.viewer"]
      key_secret_roles           = []
      owner_webhook_secret_roles = []
      named_secrets              = ["pepper", "admin-token", "verify-token"]
      publishes_to               = ["usage"]
      # The shared limiter's address, TLS and CA (redis.tf); empty when
      # var.shared_limiter is off.
      env = local.shared_limiter_env
    }

    # The signed usage webhook: checks the Standard Webhooks signature and
    # publishes the batch to the usage topic. Public at the Cloud Run layer
    # because its signature is its authentication.
    usage-webhook = {
      entry_point                = "UsageWebhook"
      description                = "keyplane usage webhook: /v1/usage"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 40
      min_instances              = 0
      max_instances              = 20
      timeout_seconds            = 60
      invokers                   = ["allUsers"]
      project_roles              = []
      key_secret_roles           = []
      owner_webhook_secret_roles = []
      named_secrets              = ["webhook-secret"]
      publishes_to               = ["usage"]
      env                        = {}
    }

    # GitHub's secret scanning partner program reports leaked keys here
    # (POST /v1/leaks/github). Public at the Cloud Run layer because GitHub
    # cannot present a Google ID token: its ECDSA signature over each
    # report is the authentication. It looks keys up by their peppered
    # hash, disables or revokes the reported ones with their audit entries
    # (datastore.user), disables or destroys their secret versions (never
    # reads one), and publishes key.leaked notifications. The Keys function
    # stays behind IAM; operators report leaks there (POST /v1/leaks).
    leak-reports = {
      entry_point                = "LeakReports"
      description                = "keyplane GitHub secret scanning reports: /v1/leaks/github"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 20
      min_instances              = 0
      max_instances              = 5
      timeout_seconds            = 60
      invokers                   = ["allUsers"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = ["key_secret_leak_stopper"]
      owner_webhook_secret_roles = []
      named_secrets              = ["pepper"]
      publishes_to               = ["notifications"]
      env                        = {}
    }

    # The usage consumer: Pub/Sub pushes usage-events here (pubsub.tf); it
    # counts each event id once and records dead letters in Firestore.
    # Deployed HTTP-triggered: the subscription is ours, so are its
    # dead-letter policy and OIDC identity, and the Functions Framework turns
    # the push envelope into the CloudEvent that RecordUsage is registered for.
    record-usage = {
      entry_point                = "RecordUsage"
      description                = "keyplane usage consumer (Pub/Sub push from usage-events)"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 20
      min_instances              = 0
      max_instances              = 20
      timeout_seconds            = 60
      invokers                   = ["serviceAccount:${google_service_account.pubsub_push.email}"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = []
      owner_webhook_secret_roles = []
      named_secrets              = []
      publishes_to               = []
      env                        = {}
    }

    # Owner notification delivery: Pub/Sub pushes the notifications topic
    # here (pubsub.tf); each message asks for one delivery attempt of one
    # notification (internal/notify). It reads and updates the delivery records
    # and reads owner webhooks (datastore.user), reads the owners' webhook
    # signing secrets (never writes them), POSTs the signed notification to
    # the owner's URL, and publishes the message of the next attempt.
    # Messages that are not due yet are answered with an error, which is how
    # Pub/Sub's 600 s backoff cap is bridged: most requests are such no-ops.
    deliver-notify = {
      entry_point                = "DeliverNotification"
      description                = "keyplane owner notification delivery (Pub/Sub push from notifications)"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 40
      min_instances              = 0
      max_instances              = 10
      timeout_seconds            = 60
      invokers                   = ["serviceAccount:${google_service_account.pubsub_push.email}"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = []
      owner_webhook_secret_roles = ["owner_webhook_secret_reader"]
      named_secrets              = []
      publishes_to               = ["notifications"]
      env                        = {}
    }

    # The Stripe usage export (internal/stripeexport; stripe.tf): the usage
    # topic's export-stripe push subscription, which exists only with
    # var.stripe_meters set, delivers each usage message here; it reads the
    # keys' owners, records its dead letters and which meter events Stripe
    # accepted (collection stripe_sent) with datastore.user, reads the
    # Stripe API key (its secret, to this account only) and calls Stripe.
    # Deployed always, so that register.go and local.functions agree; without
    # the export configured nothing invokes it (it would not start).
    export-stripe = {
      entry_point                = "ExportStripe"
      description                = "keyplane Stripe usage export (Pub/Sub push from usage-events)"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 20
      min_instances              = 0
      max_instances              = 10
      timeout_seconds            = 120
      invokers                   = ["serviceAccount:${google_service_account.pubsub_push.email}"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = []
      owner_webhook_secret_roles = []
      named_secrets              = []
      publishes_to               = []
      env                        = local.stripe_env
    }

    # The scheduled sweep (scheduler.tf): disables keys over quota or
    # abusive, re-enables quota suspensions, reaps abandoned provisioning
    # intents with their secrets, and publishes owner notifications. One
    # instance serving one request at a time; overlapping runs would be
    # safe (internal/sweep), this only saves the duplicate reads. A run stops
    # at its 4-minute budget, inside the timeout, and the next continues.
    sweep = {
      entry_point                = "Sweep"
      description                = "keyplane abuse and quota sweep: /v1/sweep (Cloud Scheduler)"
      memory                     = "512Mi"
      cpu                        = "1"
      concurrency                = 1
      min_instances              = 0
      max_instances              = 1
      timeout_seconds            = 300
      invokers                   = ["serviceAccount:${google_service_account.scheduler.email}"]
      project_roles              = ["roles/datastore.user"]
      key_secret_roles           = ["key_secret_sweeper"]
      owner_webhook_secret_roles = []
      named_secrets              = ["pepper", "admin-token"]
      publishes_to               = ["notifications"]
      env = {
        # The scheduler authenticates with a Google-signed ID token of an
        # allow-listed service account (docs/architecture.md, "Authentication").
        KEYPLANE_ID_TOKEN_SERVICE_ACCOUNTS = google_service_account.scheduler.email
      }
    }
  }

  # What every function needs to start (config.Validate and its wire builder) and
  # to address this deployment's resources rather than the defaults.
  # The Faces function's URL, which the Keys function names in portal
  # links: var.faces_url (a custom domain mapped to it) or Cloud Run's
  # deterministic URL of the service, https://<service>-<project
  # number>.<region>.run.app (a reference to the function's own uri would
  # make the function resource refer to itself).
  faces_url = var.faces_url != "" ? var.faces_url : "https://${var.name_prefix}faces-${data.google_project.this.number}.${var.region}.run.app"

  common_env = {
    GOOGLE_CLOUD_PROJECT        = var.project_id
    KEYPLANE_STORE              = "firestore"
    KEYPLANE_SECRETS            = "secretmanager"
    KEYPLANE_QUEUE              = "pubsub"
    KEYPLANE_FIRESTORE_DATABASE = google_firestore_database.main.name
    KEYPLANE_SECRET_PREFIX      = var.name_prefix
    KEYPLANE_KEY_PREFIX         = var.key_prefix
    KEYPLANE_USAGE_TOPIC        = google_pubsub_topic.usage.name
    # Keys and the sweep publish notifications, DeliverNotification
    # publishes their retries; set for all so that none falls back to the
    # default topic name.
    KEYPLANE_NOTIFICATIONS_TOPIC = google_pubsub_topic.notifications.name
    # Metrics to Cloud Monitoring, spans to Cloud Trace (monitoring.tf).
    KEYPLANE_TELEMETRY = "gcp"
  }

  # Custom role ids allow [a-zA-Z0-9_.] only: "keyplane-" → "keyplane".
  role_prefix = replace(trimsuffix(var.name_prefix, "-"), "-", "_")

  firestore_location = coalesce(var.firestore_location, var.region)

  # The Pub/Sub service agent: forwards dead letters and mints the push
  # subscription's OIDC tokens. Google creates it when the API is enabled.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# Every API the deployment uses. disable_on_destroy = false: destroying this
# configuration must not switch off APIs other workloads in the project use.
resource "google_project_service" "enabled" {
  for_each = toset([
    "artifactregistry.googleapis.com", # function images
    "cloudbuild.googleapis.com",       # function builds
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com", # data.google_project, project IAM
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com", # required by Cloud Functions gen2 deployments
    "firestore.googleapis.com",
    "iam.googleapis.com", # service accounts and custom roles
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions run as Cloud Run services
    "secretmanager.googleapis.com",
    "storage.googleapis.com", # the function source bucket
  ])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}
