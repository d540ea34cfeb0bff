#!/usr/bin/env bash
# install-prereqs.sh: install, through apt, what `make test` needs and this
# machine lacks; print what it found and did. Run by .ci/run; on a machine
# of your own run it once (as root, or with sudo available).
#
#   make, gcc        the test command, and cgo for go test -race
#   curl, python3    scripts/with-emulators.sh (free ports, readiness)
#   java             the Firestore and Pub/Sub emulators run on a JRE
#   redis-server     the Redis limiter's tests start their own (internal/testenv)
#   chromium         the console's browser test drives it headless (internal/console)
#   gcloud + the firestore and pubsub emulator components
#
# Go itself (1.26, from go.mod) is not installed here: it comes from go.dev
# or the machine image.
set -euo pipefail

missing=()
need() { # command package...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$@")
}
need make make
need gcc gcc libc6-dev
need curl curl
need python3 python3
need java default-jre-headless
need redis-server redis-server
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
need gcloud google-cloud-cli
# the emulator components, as Debian packages of the Cloud SDK's apt repository
sdk_root=""
if command -v gcloud >/dev/null 2>&1; then
  sdk_root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
fi
emulator_present() { # component dir under platform/
  [ -n "$sdk_root" ] && [ -d "$sdk_root/platform/$1" ]
}
emulator_present cloud-firestore-emulator || missing+=(google-cloud-cli-firestore-emulator)
emulator_present pubsub-emulator || missing+=(google-cloud-cli-pubsub-emulator)

# stripe-mock, Stripe's API mock, for the Stripe exporter's request-shape test
# (internal/stripeexport), from the Go module proxy into GOPATH/bin.
if ! command -v stripe-mock >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/stripe-mock" ]; then
  echo "install-prereqs: installing stripe-mock with go install" >&2
  go install github.com/stripe/stripe-mock@v0.203.0
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-prereqs: make, gcc, curl, python3, java, redis-server, chromium, gcloud and both emulators are present"
  exit 0
fi
echo "install-prereqs: installing ${missing[*]} with apt-get" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || { echo "install-prereqs: apt-get update failed; install ${missing[*]} by hand" >&2; exit 1; }
if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  echo "install-prereqs: apt-get could not install ${missing[*]}." >&2
  echo "  The google-cloud-cli packages come from Google's apt repository; add it as" >&2
  echo "  https://cloud.google.com/sdk/docs/install#deb describes, or install the Cloud SDK and" >&2
  echo "  run: gcloud components install cloud-firestore-emulator pubsub-emulator" >&2
  exit 1
fi
