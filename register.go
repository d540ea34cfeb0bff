// Package keyplane registers keyplane's Cloud Functions with the Functions
// Framework. The Go buildpack builds only the package at the root of the
// deploy source, so every function is registered here:
//
//	gcloud functions deploy keys --gen2 --runtime=go126 --source=. --entry-point=Keys
package keyplane

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/keyplane/keyplane/functions/delivernotification"
	"github.com/keyplane/keyplane/functions/exportstripe"
	"github.com/keyplane/keyplane/functions/faces"
	"github.com/keyplane/keyplane/functions/keys"
	"github.com/keyplane/keyplane/functions/leakreports"
	"github.com/keyplane/keyplane/functions/recordusage"
	"github.com/keyplane/keyplane/functions/sweep"
	"github.com/keyplane/keyplane/functions/usagewebhook"
	"github.com/keyplane/keyplane/functions/verify"
)

func init() {
	functions.HTTP("Keys", keys.Handle)
	functions.HTTP("Verify", verify.Handle)
	functions.HTTP("UsageWebhook", usagewebhook.Handle)
	functions.HTTP("Sweep", sweep.Handle)
	functions.HTTP("LeakReports", leakreports.Handle)
	functions.HTTP("Faces", faces.Handle)
	functions.CloudEvent("RecordUsage", recordusage.Handle)
	functions.CloudEvent("DeliverNotification", delivernotification.Handle)
	functions.CloudEvent("ExportStripe", exportstripe.Handle)
}
