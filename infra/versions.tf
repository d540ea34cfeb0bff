terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
    # random_bytes (the webhook secret) exists from 3.5.0 on.
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
    # Glob patterns in archive_file.excludes need 2.4 or later.
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4"
    }
  }

  # State lives in a GCS bucket named at init time:
  #
  #   terraform -chdir=infra init -backend-config=bucket=<state bucket>
  #
  # The state holds the generated secrets (see secrets.tf): the bucket must
  # be private, versioned, and readable only by the deployers. Offline
  # checks use `terraform -chdir=infra init -backend=false`, which needs
  # neither the bucket nor credentials (the providers are still downloaded).
  backend "gcs" {
    prefix = "keyplane"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
