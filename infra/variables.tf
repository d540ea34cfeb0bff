variable "project_id" {
  description = "The Google Cloud project that hosts this deployment."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Cloud Scheduler job and the source bucket."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = <<-EOT
    Prefix of every resource name and of every Secret Manager secret id
    (it becomes KEYPLANE_SECRET_PREFIX), so that several deployments can
    share a project. It must not start with another deployment's
    "<prefix>key-": the key-secret IAM conditions match secret ids by prefix.
  EOT
  type        = string
  default     = "keyplane-"

  validation {
    # 16 characters at most: service account ids are 6-30 characters and
    # the longest suffix is "deliver-notify" (14).
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}-$", var.name_prefix))
    error_message = "name_prefix must be 3-16 characters of [a-z0-9-], start with a letter and end with \"-\"."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as us-central1 or a multi-region such as nam5). Default: var.region."
  type        = string
  default     = null
}

variable "firestore_database" {
  description = "Firestore database id (KEYPLANE_FIRESTORE_DATABASE)."
  type        = string
  default     = "(default)"
}

variable "key_prefix" {
  description = "Prefix of new API keys (KEYPLANE_KEY_PREFIX): kp_live in production, kp_test in a test environment."
  type        = string
  default     = "kp_live"

  validation {
    # The rule of apikey.ValidatePrefix.
    condition     = can(regex("^[a-z]([a-z0-9_]{0,30}[a-z0-9])?$", var.key_prefix))
    error_message = "key_prefix must be 1-32 characters of [a-z0-9_], start with a letter and not end with \"_\"."
  }
}

variable "sweep_schedule" {
  description = "Cron schedule (UTC) of the abuse and quota sweep. Each run reads every key with usage today (docs/operations.md, costs)."
  type        = string
  default     = "*/5 * * * *"
}

variable "keys_invokers" {
  description = <<-EOT
    IAM members allowed to invoke the Keys function (the management API),
    e.g. ["serviceAccount:signup@my-project.iam.gserviceaccount.com"]. They
    send their Google ID token in X-Serverless-Authorization and keyplane's
    bearer token in Authorization. Empty: nobody outside the project's
    administrators can reach it. Never allUsers: the management API stays
    behind IAM; the pages people use are on the public Faces function.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.keys_invokers, "allUsers") && !contains(var.keys_invokers, "allAuthenticatedUsers")
    error_message = "keys_invokers must name callers, not allUsers or allAuthenticatedUsers: the console and the portal are public on the Faces function."
  }
}

variable "faces_url" {
  description = <<-EOT
    Origin of the Faces function (the console and the owner portal), e.g. a
    custom domain mapped to it: "https://keys.example.com". The Keys function
    names it in the links POST /v1/portal/sessions returns
    (KEYPLANE_PORTAL_URL). Empty: the function's run.app URL.
  EOT
  type        = string
  default     = ""

  validation {
    condition     = var.faces_url == "" || can(regex("^https://[^/?#@]+/?$", var.faces_url))
    error_message = "faces_url must be an https:// origin without a path, like https://keys.example.com."
  }
}

variable "verify_invokers" {
  description = "IAM members allowed to invoke the Verify function (the API gateways' service accounts). Ignored when public_verify is true."
  type        = list(string)
  default     = []
}

variable "public_verify" {
  description = <<-EOT
    Let anyone reach the Verify function (roles/run.invoker for allUsers).
    Verify still requires keyplane's bearer token, so this trades Cloud Run's
    IAM check for gateways that cannot mint Google ID tokens. Organisation
    policies that restrict allUsers bindings make this fail.
  EOT
  type        = bool
  default     = false
}

variable "verify_min_instances" {
  description = "Instances of Verify kept warm: verify is on every API request's path, where a cold start shows."
  type        = number
  default     = 0
}

variable "plans_file" {
  description = <<-EOT
    Path of a plans file (JSON, or YAML when it ends in .yaml or .yml) that
    replaces the built-in plans. It is stored as the "<prefix>plans" secret
    and mounted into every function, which gets KEYPLANE_PLANS pointing at
    it. Null: the built-in free/pro/enterprise plans.
  EOT
  type        = string
  default     = null
}

variable "shared_limiter" {
  description = <<-EOT
    Count per-minute limits (key, owner, feature) in a Memorystore for Redis
    instance shared by every Verify instance, so that they are exact across
    instances (redis.tf; docs/architecture.md, "Per-minute limits across
    instances"). Default false: each instance counts on its own, and a key
    can be admitted up to N x its limit with N instances.
  EOT
  type        = bool
  default     = false
}

variable "shared_limiter_network" {
  description = "VPC network (name or self link) of the Memorystore instance and of the Serverless VPC Access connector Verify reaches it through. With shared_limiter only."
  type        = string
  default     = "default"
}

variable "shared_limiter_connector_cidr" {
  description = "Unused /28 range of shared_limiter_network for the Serverless VPC Access connector. With shared_limiter only."
  type        = string
  default     = "10.8.0.0/28"

  validation {
    condition     = can(regex("^\\d+\\.\\d+\\.\\d+\\.\\d+/28$", var.shared_limiter_connector_cidr))
    error_message = "shared_limiter_connector_cidr must be an IPv4 /28, like 10.8.0.0/28."
  }
}

variable "shared_limiter_memory_gb" {
  description = "Memory of the Memorystore instance. Counters are ~100 bytes per bucket per minute kept for 2 minutes: 1 GB holds millions of active buckets."
  type        = number
  default     = 1
}

variable "stripe_meters" {
  description = <<-EOT
    Export metered usage to Stripe Billing meter events (stripe.tf;
    docs/operations.md, "Stripe usage export"): the mapping of metrics to
    Stripe meters' event names, KEYPLANE_STRIPE_METERS, e.g.
    "requests=api_requests,units=api_tokens". Default "": no export (no
    subscription, no secret; the ExportStripe function is deployed but
    nothing invokes it).
  EOT
  type        = string
  default     = ""
}

variable "stripe_api_key" {
  description = "Stripe restricted API key (write meter events, read customers) for the usage export; required with stripe_meters. Pass it as TF_VAR_stripe_api_key: it is kept in Secret Manager (and, marked sensitive, in the Terraform state)."
  type        = string
  default     = ""
  sensitive   = true
}
